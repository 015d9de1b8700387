/* Minimal ARM semihosting; see tte_semihost.h. */
#include "tte_semihost.h"

#include <string.h>

enum {
    SYS_OPEN = 0x01,
    SYS_CLOSE = 0x02,
    SYS_WRITEC = 0x03,
    SYS_WRITE0 = 0x04,
    SYS_WRITE = 0x05,
    SYS_READ = 0x06,
    SYS_SEEK = 0x0A,
    SYS_FLEN = 0x0C,
    SYS_GET_CMDLINE = 0x15,
    SYS_EXIT = 0x18,
    SYS_EXIT_EXTENDED = 0x20,
    ADP_STOPPED_APPLICATION_EXIT = 0x20026
};

/* One semihosting call: operation in r0, argument block in r1, result in r0. The "memory" clobber makes the
 * compiler write the argument block before the trap and re-read buffers after it. */
static long sh_call(int op, const void *arg)
{
    register long r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void tte_sh_write0(const char *s) { (void)sh_call(SYS_WRITE0, s); }

void tte_sh_writec(char c) { (void)sh_call(SYS_WRITEC, &c); }

void tte_sh_write_hex(uint32_t value)
{
    char buf[11];
    buf[0] = '0';
    buf[1] = 'x';
    for (int i = 0; i < 8; ++i) {
        uint32_t nibble = (value >> (28 - 4 * i)) & 0xFu;
        buf[2 + i] = (char)(nibble < 10 ? '0' + nibble : 'a' + nibble - 10);
    }
    buf[10] = '\0';
    tte_sh_write0(buf);
}

void tte_sh_write_u64(uint64_t value)
{
    char buf[21];
    int pos = 20;
    buf[pos] = '\0';
    do {
        /* 64-bit division needs libgcc's __aeabi_uldivmod, which is linked in. */
        buf[--pos] = (char)('0' + (int)(value % 10u));
        value /= 10u;
    } while (value != 0u && pos > 0);
    tte_sh_write0(&buf[pos]);
}

void tte_sh_exit(int status)
{
    uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)status};
    (void)sh_call(SYS_EXIT_EXTENDED, block);
    /* A host without SYS_EXIT_EXTENDED: plain SYS_EXIT (status 0 or 1 only), then spin. */
    (void)sh_call(SYS_EXIT, (const void *)(uintptr_t)(status == 0 ? ADP_STOPPED_APPLICATION_EXIT : 0x20023));
    for (;;) {
    }
}

int tte_sh_open(const char *path, int mode)
{
    uint32_t block[3] = {(uint32_t)(uintptr_t)path, (uint32_t)mode, (uint32_t)strlen(path)};
    return (int)sh_call(SYS_OPEN, block);
}

int tte_sh_close(int handle)
{
    uint32_t block[1] = {(uint32_t)handle};
    return (int)sh_call(SYS_CLOSE, block);
}

long tte_sh_read(int handle, void *buf, size_t len)
{
    uint32_t block[3] = {(uint32_t)handle, (uint32_t)(uintptr_t)buf, (uint32_t)len};
    long not_read = sh_call(SYS_READ, block); /* the host returns the number of bytes NOT read */
    if (not_read < 0 || (size_t)not_read > len) {
        return -1;
    }
    return (long)(len - (size_t)not_read);
}

int tte_sh_write(int handle, const void *buf, size_t len)
{
    uint32_t block[3] = {(uint32_t)handle, (uint32_t)(uintptr_t)buf, (uint32_t)len};
    return sh_call(SYS_WRITE, block) == 0 ? 0 : -1;
}

int tte_sh_seek(int handle, uint32_t pos)
{
    uint32_t block[2] = {(uint32_t)handle, pos};
    return sh_call(SYS_SEEK, block) == 0 ? 0 : -1;
}

long tte_sh_flen(int handle)
{
    uint32_t block[1] = {(uint32_t)handle};
    return sh_call(SYS_FLEN, block);
}

int tte_sh_cmdline(char *buf, size_t len)
{
    uint32_t block[2] = {(uint32_t)(uintptr_t)buf, (uint32_t)len};
    if (sh_call(SYS_GET_CMDLINE, block) != 0) {
        return -1;
    }
    return (int)block[1];
}
