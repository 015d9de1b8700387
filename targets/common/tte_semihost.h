/* Minimal ARM semihosting for tte firmware (no newlib rdimon: its start-up hangs under QEMU).
 *
 * Semihosting calls trap into the debugger or emulator with `bkpt 0xAB`. Under QEMU
 * (-semihosting-config enable=on,target=native) text written with tte_sh_write0 goes to QEMU's stderr,
 * tte_sh_exit ends QEMU with `status` as its exit status, and files are opened relative to QEMU's working
 * directory. On a real board a debug probe with semihosting enabled (pyocd, openocd) must be attached:
 * without one, the first call stops in a HardFault.
 */
#ifndef TTE_SEMIHOST_H
#define TTE_SEMIHOST_H

#include <stddef.h>
#include <stdint.h>

/* Open modes of SYS_OPEN (ISO C fopen modes, in order "r", "rb", "r+", "r+b", "w", "wb", ...). */
#define TTE_SH_MODE_RB 1
#define TTE_SH_MODE_WB 5
#define TTE_SH_MODE_AB 9

/* Prints a NUL-terminated string (SYS_WRITE0). */
void tte_sh_write0(const char *s);
/* Prints one character (SYS_WRITEC). */
void tte_sh_writec(char c);
/* Prints `value` as 0x followed by 8 hex digits (no libc). */
void tte_sh_write_hex(uint32_t value);
/* Prints `value` in decimal (no libc). */
void tte_sh_write_u64(uint64_t value);
/* Ends the program with exit status `status` (0..255; SYS_EXIT_EXTENDED). Does not return. */
void tte_sh_exit(int status) __attribute__((noreturn));

/* Opens a host file; returns a handle >= 0 or -1. `mode` is one of TTE_SH_MODE_*. */
int tte_sh_open(const char *path, int mode);
/* Closes a handle; 0 on success. */
int tte_sh_close(int handle);
/* Reads up to `len` bytes; returns the number of bytes read (0 at end of file) or -1. */
long tte_sh_read(int handle, void *buf, size_t len);
/* Writes `len` bytes; returns 0 on success, -1 otherwise. */
int tte_sh_write(int handle, const void *buf, size_t len);
/* Moves the read/write position of an open file to byte `pos` from its start; 0 on success, -1 otherwise. */
int tte_sh_seek(int handle, uint32_t pos);
/* The length of an open file in bytes, or -1. */
long tte_sh_flen(int handle);
/* Copies the command line (QEMU: the `arg=` items of -semihosting-config, space separated) into buf; returns
 * its length or -1. */
int tte_sh_cmdline(char *buf, size_t len);

#endif /* TTE_SEMIHOST_H */
