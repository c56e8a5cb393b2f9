/* The LLVM OpenMP entry points that MLIR's convert-openmp-to-llvm emits (`__kmpc_*`), implemented on GNU
 * libgomp: generated kernels run on the thread pool of the libgomp that torch loaded, so kernels and torch's
 * intra-op work share one pool and never oversubscribe the cores (threads.py builds and loads this file).
 *
 * Only what the lowered kernels reference is here: a parallel region (`__kmpc_fork_call`), a statically
 * scheduled worksharing loop (`__kmpc_for_static_init_*`, `_fini`), barriers, the thread number, and an
 * explicit team size (`__kmpc_push_num_threads`, and `solder_omp_set_threads` that threads.py calls with
 * torch.get_num_threads()). The `gtid` arguments of the LLVM ABI are ignored: libgomp knows the calling
 * thread's team. */
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>

extern void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags);
extern void GOMP_barrier(void);
extern int omp_get_thread_num(void);
extern int omp_get_num_threads(void);

typedef void (*microtask_t)(int32_t *gtid, int32_t *btid, ...);

enum { MAX_ARGS = 16 };

struct fork {
    microtask_t fn;
    int32_t argc;
    void *args[MAX_ARGS];
};

static volatile int team_size;     /* 0: libgomp's own default (its nthreads ICV) */
static __thread int pushed_threads; /* __kmpc_push_num_threads, for the next fork of this thread */
static int64_t forks;               /* parallel regions started, for tests and diagnostics */

void solder_omp_set_threads(int n) { team_size = n > 0 ? n : 0; }
int solder_omp_get_threads(void) { return team_size; }
int64_t solder_omp_forks(void) { return __atomic_load_n(&forks, __ATOMIC_RELAXED); }

static void run_microtask(void *data) {
    struct fork *f = data;
    int32_t gtid = omp_get_thread_num(), btid = gtid;
    void **a = f->args;
    switch (f->argc) {
#define A1 a[0]
#define A2 A1, a[1]
#define A3 A2, a[2]
#define A4 A3, a[3]
#define A5 A4, a[4]
#define A6 A5, a[5]
#define A7 A6, a[6]
#define A8 A7, a[7]
#define A9 A8, a[8]
#define A10 A9, a[9]
#define A11 A10, a[10]
#define A12 A11, a[11]
#define A13 A12, a[12]
#define A14 A13, a[13]
#define A15 A14, a[14]
#define A16 A15, a[15]
    case 0: f->fn(&gtid, &btid); break;
    case 1: f->fn(&gtid, &btid, A1); break;
    case 2: f->fn(&gtid, &btid, A2); break;
    case 3: f->fn(&gtid, &btid, A3); break;
    case 4: f->fn(&gtid, &btid, A4); break;
    case 5: f->fn(&gtid, &btid, A5); break;
    case 6: f->fn(&gtid, &btid, A6); break;
    case 7: f->fn(&gtid, &btid, A7); break;
    case 8: f->fn(&gtid, &btid, A8); break;
    case 9: f->fn(&gtid, &btid, A9); break;
    case 10: f->fn(&gtid, &btid, A10); break;
    case 11: f->fn(&gtid, &btid, A11); break;
    case 12: f->fn(&gtid, &btid, A12); break;
    case 13: f->fn(&gtid, &btid, A13); break;
    case 14: f->fn(&gtid, &btid, A14); break;
    case 15: f->fn(&gtid, &btid, A15); break;
    default: f->fn(&gtid, &btid, A16); break;
    }
}

/* The shared arguments of an outlined region are pointers (LLVM's OpenMPIRBuilder passes one aggregate). */
void __kmpc_fork_call(void *loc, int32_t argc, microtask_t fn, ...) {
    struct fork f;
    va_list ap;
    (void)loc;
    if (argc < 0 || argc > MAX_ARGS)
        abort();
    f.fn = fn;
    f.argc = argc;
    va_start(ap, fn);
    for (int i = 0; i < argc; i++)
        f.args[i] = va_arg(ap, void *);
    va_end(ap);
    unsigned n = pushed_threads > 0 ? (unsigned)pushed_threads : (unsigned)team_size;
    pushed_threads = 0;
    __atomic_fetch_add(&forks, 1, __ATOMIC_RELAXED);
    GOMP_parallel(run_microtask, &f, n, 0);
}

void __kmpc_push_num_threads(void *loc, int32_t gtid, int32_t n) {
    (void)loc, (void)gtid;
    pushed_threads = n;
}

int32_t __kmpc_global_thread_num(void *loc) {
    (void)loc;
    return omp_get_thread_num();
}

int32_t __kmpc_global_num_threads(void *loc) {
    (void)loc;
    return omp_get_num_threads();
}

void __kmpc_barrier(void *loc, int32_t gtid) {
    (void)loc, (void)gtid;
    GOMP_barrier();
}

/* An `if(false)` region runs on the calling thread: nothing to set up, the team is the thread itself. */
void __kmpc_serialized_parallel(void *loc, int32_t gtid) { (void)loc, (void)gtid; }
void __kmpc_end_serialized_parallel(void *loc, int32_t gtid) { (void)loc, (void)gtid; }

void __kmpc_for_static_fini(void *loc, int32_t gtid) { (void)loc, (void)gtid; }

/* Static schedules (chunked or not): each thread gets one contiguous block of the iterations [lower, upper]
 * (inclusive, step incr), the first `trip % nth` threads one iteration more; `*stride` spans the whole range,
 * so a chunked loop's dispatch runs once. An empty block has upper = lower - incr, as libomp's. */
#define STATIC_INIT(SUFFIX, T, ST)                                                                          \
    void __kmpc_for_static_init_##SUFFIX(void *loc, int32_t gtid, int32_t sched, int32_t *last, T *lower,  \
                                         T *upper, ST *stride, ST incr, ST chunk) {                        \
        (void)loc, (void)gtid, (void)sched, (void)chunk;                                                    \
        T lo = *lower, hi = *upper;                                                                         \
        uint64_t trip;                                                                                      \
        if (incr > 0)                                                                                       \
            trip = hi < lo ? 0 : (uint64_t)(hi - lo) / (uint64_t)incr + 1;                                  \
        else                                                                                                \
            trip = hi > lo ? 0 : (uint64_t)(lo - hi) / (uint64_t)(-incr) + 1;                               \
        uint64_t nth = (uint64_t)omp_get_num_threads(), tid = (uint64_t)omp_get_thread_num();               \
        uint64_t small = trip / nth, extra = trip % nth;                                                    \
        uint64_t first = tid * small + (tid < extra ? tid : extra);                                         \
        uint64_t count = small + (tid < extra ? 1 : 0);                                                     \
        *lower = (T)(lo + (T)first * (T)incr);                                                              \
        *upper = (T)(*lower + (T)count * (T)incr - (T)incr);                                                \
        if (last)                                                                                           \
            *last = count > 0 && first + count == trip;                                                     \
        if (stride)                                                                                         \
            *stride = (ST)(trip ? trip : 1) * incr;                                                         \
    }

STATIC_INIT(4, int32_t, int32_t)
STATIC_INIT(4u, uint32_t, int32_t)
STATIC_INIT(8, int64_t, int64_t)
STATIC_INIT(8u, uint64_t, int64_t)
