/*
 * The scale benchmark's child in C, as the issue that set the targets measured (the Rust
 * `prism-bench-child` does the same, at the cost of the Rust runtime's start). It stamps
 * CLOCK_MONOTONIC at the top of main(), reports "start <pid> <ns> <tag>" as one datagram to the
 * unix socket in argv[1] (tag = argv[2]), then waits for SIGTERM with sigsuspend (SIGTERM blocked
 * outside it, so none is lost); on SIGTERM it stamps again, reports "term <pid> <ns> <tag>" and
 * exits 0. Any error ends it quietly with a non-zero code.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t terminated;

static void on_sigterm(int signal_number) {
    (void)signal_number;
    terminated = 1;
}

static int monotonic_ns(unsigned long long *ns) {
    struct timespec now;
    if (clock_gettime(CLOCK_MONOTONIC, &now) != 0) return 0;
    *ns = (unsigned long long)now.tv_sec * 1000000000ULL + (unsigned long long)now.tv_nsec;
    return 1;
}

static int report(int fd, const struct sockaddr_un *to, const char *kind, unsigned long long ns,
                  const char *tag) {
    char line[256];
    int length = snprintf(line, sizeof line, "%s %d %llu %s\n", kind, (int)getpid(), ns, tag);
    if (length < 0 || (size_t)length >= sizeof line) return 0;
    return sendto(fd, line, (size_t)length, 0, (const struct sockaddr *)to, sizeof *to) == length;
}

int main(int argc, char **argv) {
    unsigned long long started;
    if (!monotonic_ns(&started)) return 3;
    if (argc < 3 || strlen(argv[1]) >= sizeof(((struct sockaddr_un *)0)->sun_path)) return 2;
    sigset_t term, wait_mask;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &term, &wait_mask) != 0) return 3;
    sigdelset(&wait_mask, SIGTERM);
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_sigterm;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    if (sigaction(SIGTERM, &action, NULL) != 0) return 3;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 3;
    struct sockaddr_un to;
    memset(&to, 0, sizeof to);
    to.sun_family = AF_UNIX;
    strcpy(to.sun_path, argv[1]);
    if (!report(fd, &to, "start", started, argv[2])) return 4;
    while (!terminated) sigsuspend(&wait_mask);
    unsigned long long ended;
    if (!monotonic_ns(&ended)) return 3;
    if (!report(fd, &to, "term", ended, argv[2])) return 4;
    return 0;
}
