/* The firmware's main(): runs a compiled model on samples read from host files through semihosting.
 *
 * Command line (QEMU: -semihosting-config ...,arg=firmware,arg=<command>,arg=...):
 *   infer IN OUT
 *       IN holds N records of TTE_IN_BYTES (every model input, int8 NHWC, in order); each is run through the
 *       model and its outputs (TTE_OUT_BYTES) are appended to OUT.
 *       Last line: TTE_RESULT samples=N ticks_sum= ticks_min= ticks_max= stack_peak= stack_size= status=
 *   train TRAIN EVAL STEPS LRS SEED LOSSES PARAMS        (models compiled with a train step)
 *       TRAIN and EVAL hold records of TTE_IN_BYTES input bytes and a little-endian int32 label; EVAL may be
 *       `-` (none: one inference on the first TRAIN record is measured instead). The firmware counts the
 *       correct top-1 predictions on EVAL, calls <name>_seed(SEED) unless SEED is `-`, runs STEPS train steps
 *       on the TRAIN records in file order (wrapping around) with the learning rates of LRS (float32: one for
 *       every step, or a single one for all), writing each step's loss (float32) to LOSSES, evaluates EVAL
 *       again and writes the trained parameters (<name>_params_get) to PARAMS unless it is `-`.
 *       Last line: TTE_RESULT train_records= eval_records= steps= correct_before= correct_after=
 *       train_ticks_sum= train_ticks_min= train_ticks_max= train_ticks_first= train_stack_peak= infer_calls=
 *       infer_ticks_sum= infer_ticks_min= infer_ticks_max= infer_stack_peak= stack_size= params_bytes=
 *       params_written= status=
 * ticks are SysTick ticks around the model call only (QEMU: multiply by the instructions per tick); a stack
 * peak is the deepest stack use during any such call, in bytes from the top of the stack (the harness's own
 * frames included).
 * Exit status: 0, 1 when a model call returned non-zero, 3 for a bad command line, 4 for a file error.
 *
 * Profiling (built with -DTTE_PROFILE, as bench/profile.py does): the generated model calls tte_profile_begin/
 * _end around every node (ids: the model's profile.json); the harness adds each node's SysTick ticks and calls
 * and, after the command, writes them to the file tte_profile.bin: TTE_PROFILE_NODES pairs of little-endian
 * uint32 (ticks, calls). The hooks' own cost (about 30 instructions a node) falls partly inside the counts.
 *
 * Memory: samples are read straight into the model's input buffers (<name>_input_buffer(i), in its arena), so
 * the harness keeps no copy of an input. Its own SRAM is one call's outputs (TTE_OUT_BYTES) and, in training
 * firmware built with TTE_PARAMS_DUMP, a buffer of the parameters' size for the final dump.
 *
 * tte_harness_config.h (written by tte.targets) includes the model header and defines TTE_NUM_INPUTS,
 * TTE_IN_SIZES, TTE_IN_BYTES, TTE_OUT_BYTES, TTE_OUT0_COUNT, TTE_OUT0_TYPE, TTE_INPUT_BUFFER(i),
 * TTE_HARNESS_INFER(in, out) and, for a model with a train step, TTE_HAS_TRAIN, TTE_TRAIN_STEP(in, label, lr),
 * TTE_PARAMS_BYTES, TTE_PARAMS_GET(dst), TTE_SEED(seed) and TTE_PARAMS_DUMP.
 */
#include <stdint.h>
#include <string.h>

#include "tte_harness_config.h"
#include "tte_platform.h"
#include "tte_semihost.h"

enum { EXIT_OK = 0, EXIT_MODEL = 1, EXIT_USAGE = 3, EXIT_FILE = 4 };

static const uint32_t k_in_sizes[TTE_NUM_INPUTS] = TTE_IN_SIZES;
static int8_t *g_in[TTE_NUM_INPUTS]; /* the model's input buffers, in its arena */
static int8_t g_out[TTE_OUT_BYTES] __attribute__((aligned(8)));

/* Measurements of one kind of call (inference or train step). */
typedef struct {
    uint32_t calls;
    uint64_t ticks_sum, ticks_min, ticks_max, ticks_first;
    uint32_t stack_peak;
} stats_t;

static void stats_add(stats_t *s, uint64_t dt, uint32_t stack)
{
    s->ticks_first = s->calls == 0u ? dt : s->ticks_first;
    s->ticks_min = s->calls == 0u || dt < s->ticks_min ? dt : s->ticks_min;
    s->ticks_max = dt > s->ticks_max ? dt : s->ticks_max;
    s->ticks_sum += dt;
    s->stack_peak = stack > s->stack_peak ? stack : s->stack_peak;
    s->calls += 1u;
}

#if defined(TTE_PROFILE)
static uint32_t g_profile[TTE_PROFILE_NODES][2]; /* per node: ticks, calls */
static uint64_t g_profile_t0;

void tte_profile_begin(uint32_t node);
void tte_profile_end(uint32_t node);

void tte_profile_begin(uint32_t node)
{
    (void)node;
    g_profile_t0 = tte_ticks();
}

void tte_profile_end(uint32_t node)
{
    const uint64_t t1 = tte_ticks();
    if (node < TTE_PROFILE_NODES) {
        g_profile[node][0] += (uint32_t)(t1 - g_profile_t0);
        g_profile[node][1] += 1u;
    }
}

/* Writes the per-node counts to tte_profile.bin; 0, or a file error status. */
static int write_profile(void)
{
    int handle = tte_sh_open("tte_profile.bin", TTE_SH_MODE_WB);
    if (handle < 0 || tte_sh_write(handle, g_profile, sizeof g_profile) != 0) {
        return EXIT_FILE;
    }
    tte_sh_close(handle);
    return EXIT_OK;
}
#endif

static void print_field(const char *name, uint64_t value)
{
    tte_sh_write0(name);
    tte_sh_write_u64(value);
}

/* One inference on the inputs already in the model's input buffers, measured; its status. */
static int run_infer(stats_t *s)
{
    tte_stack_repaint();
    uint64_t t0 = tte_ticks();
    int status = TTE_HARNESS_INFER(g_in, g_out);
    uint64_t t1 = tte_ticks();
    stats_add(s, t1 - t0, tte_stack_peak_bytes());
    return status;
}

/* Reads one record's inputs straight into the model's input buffers; 0, or -1 on a short read. */
static int read_inputs(int handle)
{
    for (int i = 0; i < TTE_NUM_INPUTS; ++i) {
        if (tte_sh_read(handle, g_in[i], k_in_sizes[i]) != (long)k_in_sizes[i]) {
            return -1;
        }
    }
    return 0;
}

/* The number of whole records of `record` bytes in an open file, or -1 when its length is not a multiple. */
static long count_records(int handle, uint32_t record)
{
    long len = tte_sh_flen(handle);
    if (len < 0 || (uint32_t)len % record != 0u) {
        tte_sh_write0("tte harness: the sample file is not a whole number of samples\n");
        return -1;
    }
    return (long)((uint32_t)len / record);
}

static int file_error(const char *what)
{
    tte_sh_write0("tte harness: ");
    tte_sh_write0(what);
    tte_sh_write0("\n");
    return EXIT_FILE;
}

static int infer_files(const char *in_path, const char *out_path)
{
    int in = tte_sh_open(in_path, TTE_SH_MODE_RB);
    int out = tte_sh_open(out_path, TTE_SH_MODE_WB);
    if (in < 0 || out < 0) {
        return file_error("cannot open the sample or output file");
    }
    long n = count_records(in, TTE_IN_BYTES);
    if (n < 0) {
        return EXIT_FILE;
    }
    stats_t s;
    memset(&s, 0, sizeof s);
    int status = 0;
    for (long i = 0; i < n; ++i) {
        if (read_inputs(in) != 0) {
            return file_error("cannot read the sample file");
        }
        int st = run_infer(&s);
        status = status == 0 ? st : status;
        if (tte_sh_write(out, g_out, sizeof g_out) != 0) {
            return file_error("cannot write the output file");
        }
    }
    tte_sh_close(in);
    tte_sh_close(out);
    print_field("TTE_RESULT samples=", s.calls);
    print_field(" ticks_sum=", s.ticks_sum);
    print_field(" ticks_min=", s.ticks_min);
    print_field(" ticks_max=", s.ticks_max);
    print_field(" stack_peak=", s.stack_peak);
    print_field(" stack_size=", tte_stack_size_bytes());
    print_field(" status=", (uint32_t)status);
    tte_sh_write0("\n");
    return status != 0 ? EXIT_MODEL : EXIT_OK;
}

#if defined(TTE_HAS_TRAIN)

#define TTE_RECORD_BYTES (TTE_IN_BYTES + 4u)

#if TTE_PARAMS_DUMP
static uint8_t g_params[TTE_PARAMS_BYTES] __attribute__((aligned(8)));
#endif

/* The train command's arguments and open files (-1: none). */
typedef struct {
    const char *params_path;
    int train, eval, lrs, losses;
    long train_records, eval_records, lr_count;
    uint32_t steps, seed;
    int has_seed;
} train_job_t;

typedef struct {
    uint32_t correct_before, correct_after;
    stats_t train, infer;
    int status;
} train_result_t;

/* Parses a decimal unsigned number; 0 on success. */
static int parse_u32(const char *text, uint32_t *value)
{
    uint32_t v = 0u;
    if (*text == '\0') {
        return -1;
    }
    for (const char *p = text; *p != '\0'; ++p) {
        if (*p < '0' || *p > '9') {
            return -1;
        }
        v = v * 10u + (uint32_t)(*p - '0');
    }
    *value = v;
    return 0;
}

static uint32_t load_le32(const uint8_t *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

/* Reads one record (inputs into the model's buffers, then the int32 label); 0, or -1 on a short read. */
static int read_record(int handle, int32_t *label)
{
    uint8_t bytes[4];
    if (read_inputs(handle) != 0 || tte_sh_read(handle, bytes, sizeof bytes) != (long)sizeof bytes) {
        return -1;
    }
    *label = (int32_t)load_le32(bytes);
    return 0;
}

/* The index of the largest score of output 0 (the first one on ties, like numpy's argmax). */
static int32_t argmax_out0(void)
{
    const TTE_OUT0_TYPE *scores = (const TTE_OUT0_TYPE *)(const void *)g_out;
    int32_t best = 0;
    for (int32_t i = 1; i < (int32_t)TTE_OUT0_COUNT; ++i) {
        best = scores[i] > scores[best] ? i : best;
    }
    return best;
}

/* Top-1 hits over the eval records (no eval file: one measured inference on the first train record); -1 on a
 * file error. */
static long evaluate(const train_job_t *job, train_result_t *r)
{
    int handle = job->eval >= 0 ? job->eval : job->train;
    long records = job->eval >= 0 ? job->eval_records : 1;
    long correct = 0;
    if (tte_sh_seek(handle, 0u) != 0) {
        return -1;
    }
    for (long i = 0; i < records; ++i) {
        int32_t label;
        if (read_record(handle, &label) != 0) {
            return -1;
        }
        int st = run_infer(&r->infer);
        r->status = r->status == 0 ? st : r->status;
        correct += argmax_out0() == label;
    }
    return job->eval >= 0 ? correct : 0;
}

/* The learning rate of the next step: the single one of the LRS file, or the next of one per step. */
static int next_lr(const train_job_t *job, float *lr)
{
    if (job->lr_count == 1 && tte_sh_seek(job->lrs, 0u) != 0) {
        return -1;
    }
    return tte_sh_read(job->lrs, lr, sizeof *lr) == (long)sizeof *lr ? 0 : -1;
}

/* The train steps over the train records in file order, wrapping around; each loss goes to the losses file. */
static int train_steps(const train_job_t *job, train_result_t *r)
{
    for (uint32_t k = 0; k < job->steps; ++k) {
        int32_t label;
        float lr;
        if (k % (uint32_t)job->train_records == 0u && tte_sh_seek(job->train, 0u) != 0) {
            return file_error("cannot rewind the train file");
        }
        if (read_record(job->train, &label) != 0 || next_lr(job, &lr) != 0) {
            return file_error("cannot read the train or learning-rate file");
        }
        tte_stack_repaint();
        uint64_t t0 = tte_ticks();
        float loss = TTE_TRAIN_STEP(g_in, label, lr);
        uint64_t t1 = tte_ticks();
        stats_add(&r->train, t1 - t0, tte_stack_peak_bytes());
        if (tte_sh_write(job->losses, &loss, sizeof loss) != 0) {
            return file_error("cannot write the losses file");
        }
    }
    return EXIT_OK;
}

static int write_params(const char *path)
{
#if TTE_PARAMS_DUMP
    int handle = tte_sh_open(path, TTE_SH_MODE_WB);
    if (handle < 0) {
        return file_error("cannot open the parameters file");
    }
    TTE_PARAMS_GET(g_params);
    int rc = tte_sh_write(handle, g_params, sizeof g_params);
    tte_sh_close(handle);
    return rc == 0 ? EXIT_OK : file_error("cannot write the parameters file");
#else
    (void)path;
    tte_sh_write0("tte harness: built without TTE_PARAMS_DUMP: no parameters written\n");
    return EXIT_USAGE;
#endif
}

static void print_train_result(const train_job_t *job, const train_result_t *r)
{
    print_field("TTE_RESULT train_records=", (uint64_t)job->train_records);
    print_field(" eval_records=", (uint64_t)job->eval_records);
    print_field(" steps=", r->train.calls);
    print_field(" correct_before=", r->correct_before);
    print_field(" correct_after=", r->correct_after);
    print_field(" train_ticks_sum=", r->train.ticks_sum);
    print_field(" train_ticks_min=", r->train.ticks_min);
    print_field(" train_ticks_max=", r->train.ticks_max);
    print_field(" train_ticks_first=", r->train.ticks_first);
    print_field(" train_stack_peak=", r->train.stack_peak);
    print_field(" infer_calls=", r->infer.calls);
    print_field(" infer_ticks_sum=", r->infer.ticks_sum);
    print_field(" infer_ticks_min=", r->infer.ticks_min);
    print_field(" infer_ticks_max=", r->infer.ticks_max);
    print_field(" infer_stack_peak=", r->infer.stack_peak);
    print_field(" stack_size=", tte_stack_size_bytes());
    print_field(" params_bytes=", (uint32_t)TTE_PARAMS_BYTES);
    print_field(" params_written=", strcmp(job->params_path, "-") != 0);
    print_field(" status=", (uint32_t)r->status);
    tte_sh_write0("\n");
}

/* Evaluate, train, evaluate, dump the parameters. */
static int train_run(const train_job_t *job)
{
    train_result_t r;
    memset(&r, 0, sizeof r);
    long before = evaluate(job, &r);
    if (before < 0) {
        return file_error("cannot read the eval file");
    }
    r.correct_before = (uint32_t)before;
    if (job->has_seed) {
        TTE_SEED(job->seed);
    }
    int rc = train_steps(job, &r);
    long after = rc == EXIT_OK ? evaluate(job, &r) : 0;
    if (after < 0) {
        rc = file_error("cannot read the eval file");
    }
    r.correct_after = after > 0 ? (uint32_t)after : 0u;
    if (rc == EXIT_OK && strcmp(job->params_path, "-") != 0) {
        rc = write_params(job->params_path);
    }
    print_train_result(job, &r);
    return rc != EXIT_OK ? rc : (r.status != 0 ? EXIT_MODEL : EXIT_OK);
}

/* train TRAIN EVAL STEPS LRS SEED LOSSES PARAMS: opens the files and checks the arguments. */
static int train_command(char **words)
{
    train_job_t job = {words[8], -1, -1, -1, -1, 0, 0, 0, 0u, 0u, 0};
    job.has_seed = strcmp(words[6], "-") != 0;
    if (parse_u32(words[4], &job.steps) != 0 || (job.has_seed && parse_u32(words[6], &job.seed) != 0)) {
        tte_sh_write0("tte harness: STEPS and SEED must be decimal numbers\n");
        return EXIT_USAGE;
    }
    job.train = tte_sh_open(words[2], TTE_SH_MODE_RB);
    job.eval = strcmp(words[3], "-") == 0 ? -1 : tte_sh_open(words[3], TTE_SH_MODE_RB);
    job.lrs = tte_sh_open(words[5], TTE_SH_MODE_RB);
    job.losses = tte_sh_open(words[7], TTE_SH_MODE_WB);
    if (job.train < 0 || job.lrs < 0 || job.losses < 0 || (job.eval < 0 && strcmp(words[3], "-") != 0)) {
        return file_error("cannot open the train, eval, learning-rate or losses file");
    }
    job.train_records = count_records(job.train, TTE_RECORD_BYTES);
    job.eval_records = job.eval < 0 ? 0 : count_records(job.eval, TTE_RECORD_BYTES);
    job.lr_count = tte_sh_flen(job.lrs) / 4;
    if (job.train_records <= 0 || job.eval_records < 0) {
        return file_error("the train file is empty, or a sample file is malformed");
    }
    if (job.lr_count != 1 && job.lr_count != (long)job.steps) {
        return file_error("the learning-rate file must hold one float32, or one for every step");
    }
    int rc = train_run(&job);
    tte_sh_close(job.train);
    tte_sh_close(job.lrs);
    tte_sh_close(job.losses);
    if (job.eval >= 0) {
        tte_sh_close(job.eval);
    }
    return rc;
}

#endif /* TTE_HAS_TRAIN */

/* Splits the command line at spaces (paths must not contain spaces). */
static int split(char *line, char **words, int max_words)
{
    int n = 0;
    char *p = line;
    while (*p != '\0' && n < max_words) {
        while (*p == ' ') {
            *p++ = '\0';
        }
        if (*p == '\0') {
            break;
        }
        words[n++] = p;
        while (*p != '\0' && *p != ' ') {
            ++p;
        }
    }
    return n;
}

static int run_command(int n, char **words)
{
    if (n == 4 && strcmp(words[1], "infer") == 0) {
        return infer_files(words[2], words[3]);
    }
#if defined(TTE_HAS_TRAIN)
    if (n == 9 && strcmp(words[1], "train") == 0) {
        return train_command(words);
    }
    tte_sh_write0("usage: firmware infer SAMPLES OUTPUTS | train TRAIN EVAL STEPS LRS SEED LOSSES PARAMS\n");
#else
    tte_sh_write0("usage: firmware infer SAMPLES OUTPUTS (this model has no train step)\n");
#endif
    return EXIT_USAGE;
}

int main(void)
{
    static char line[512];
    char *words[10];
    if (tte_sh_cmdline(line, sizeof line) < 0) {
        return EXIT_USAGE;
    }
    int n = split(line, words, 10);
    for (int i = 0; i < TTE_NUM_INPUTS; ++i) {
        g_in[i] = TTE_INPUT_BUFFER(i);
    }
    int rc = run_command(n, words);
#if defined(TTE_PROFILE)
    if (rc != EXIT_USAGE && write_profile() != EXIT_OK) {
        rc = file_error("cannot write tte_profile.bin");
    }
#endif
    return rc;
}
