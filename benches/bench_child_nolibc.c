/*
 * The scale benchmark's child without a C library (x86_64 Linux only): the same reports as
 * bench_child.c ("start <pid> <ns> <tag>" as one datagram to the unix socket in argv[1], tag =
 * argv[2]; on SIGTERM "term <pid> <ns> <tag>", then exit 0), made with raw system calls from a
 * static, non-PIE executable, so that its exec costs no dynamic loader and none of the C library's
 * start-up (glibc's loader probes the CPU and its caches with `cpuid`, which some virtual machines
 * trap: 7.4 us per instruction on the machine of BENCHMARKS.md). `--child nolibc` runs it, to show
 * what is the supervisor's own share of a start. It stamps at its first instruction (it has no
 * main()). Build:
 *   cc -O2 -static -nostdlib -fno-pie -no-pie -fno-stack-protector -o child bench_child_nolibc.c
 */
#if !defined(__x86_64__) || !defined(__linux__)
#error "bench_child_nolibc.c is for x86_64 Linux only"
#endif

typedef unsigned long u64;

#define SYS_write 1
#define SYS_rt_sigprocmask 14
#define SYS_getpid 39
#define SYS_socket 41
#define SYS_sendto 44
#define SYS_exit_group 231
#define SYS_clock_gettime 228
#define SYS_rt_sigtimedwait 128

#define AF_UNIX 1
#define SOCK_DGRAM 2
#define SOCK_CLOEXEC 02000000
#define CLOCK_MONOTONIC 1
#define SIGTERM 15
#define SIG_BLOCK 0

static long syscall6(long number, long a, long b, long c, long d, long e, long f) {
    long result;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(result)
                     : "a"(number), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return result;
}

struct timespec_raw {
    long seconds;
    long nanoseconds;
};

struct sockaddr_un_raw {
    unsigned short family;
    char path[108];
};

static u64 monotonic_ns(void) {
    struct timespec_raw now;
    if (syscall6(SYS_clock_gettime, CLOCK_MONOTONIC, (long)&now, 0, 0, 0, 0) != 0) return 0;
    return (u64)now.seconds * 1000000000UL + (u64)now.nanoseconds;
}

/* The reports are built in a line of LINE_BYTES; a report that does not fit is an error, as
 * in bench_child.c (no partial line is sent). */
#define LINE_BYTES 256

static int append(char *line, int at, const char *text) {
    while (*text && at < LINE_BYTES) line[at++] = *text++;
    return *text ? LINE_BYTES : at;
}

static int append_number(char *line, int at, u64 number) {
    char digits[24];
    int count = 0;
    do {
        digits[count++] = (char)('0' + number % 10);
        number /= 10;
    } while (number && count < 24);
    while (count && at < LINE_BYTES) line[at++] = digits[--count];
    return count ? LINE_BYTES : at;
}

static int report(int fd, const struct sockaddr_un_raw *to, const char *kind, u64 ns,
                  const char *tag) {
    char line[LINE_BYTES];
    int at = append(line, 0, kind);
    at = append(line, at, " ");
    at = append_number(line, at, (u64)syscall6(SYS_getpid, 0, 0, 0, 0, 0, 0));
    at = append(line, at, " ");
    at = append_number(line, at, ns);
    at = append(line, at, " ");
    at = append(line, at, tag);
    at = append(line, at, "\n");
    if (at >= LINE_BYTES) return 0;
    return syscall6(SYS_sendto, fd, (long)line, at, 0, (long)to, sizeof *to) == at;
}

static int run(long argc, char **argv) {
    u64 started = monotonic_ns();
    if (!started) return 3;
    if (argc < 3) return 2;
    /* Filled field by field: an initializer of the whole struct may be compiled to a call of
     * memset, which a program without a C library does not have. */
    struct sockaddr_un_raw to;
    to.family = AF_UNIX;
    int length = 0;
    while (argv[1][length]) {
        if (length >= (int)sizeof to.path - 1) return 2;
        to.path[length] = argv[1][length];
        length++;
    }
    to.path[length] = 0;
    /* SIGTERM blocked and then waited for: no handler, and none is lost. */
    u64 term = 1UL << (SIGTERM - 1);
    if (syscall6(SYS_rt_sigprocmask, SIG_BLOCK, (long)&term, 0, 8, 0, 0) != 0) return 3;
    long fd = syscall6(SYS_socket, AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, 0, 0, 0);
    if (fd < 0) return 3;
    if (!report((int)fd, &to, "start", started, argv[2])) return 4;
    while (syscall6(SYS_rt_sigtimedwait, (long)&term, 0, 0, 8, 0, 0) != SIGTERM) {
    }
    u64 ended = monotonic_ns();
    if (!ended) return 3;
    if (!report((int)fd, &to, "term", ended, argv[2])) return 4;
    return 0;
}

/* The kernel enters here with the stack pointer at argc, followed by argv. */
__attribute__((used)) static void start_c(long *stack) {
    long code = run(stack[0], (char **)(stack + 1));
    syscall6(SYS_exit_group, code, 0, 0, 0, 0, 0);
}

__asm__(".text\n"
        ".global _start\n"
        "_start:\n"
        "  xor %rbp, %rbp\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call start_c\n"
        "  hlt\n");
