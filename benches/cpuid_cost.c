/*
 * What one `cpuid` instruction costs on this machine (x86 only). glibc's start-up, linked
 * dynamically or statically, probes the CPU and its caches with dozens of them
 * (init_cpu_features, dl_init_cacheinfo: 68 with glibc 2.36 on the Intel host of BENCHMARKS.md);
 * on bare metal each takes about 0.1 us, but a virtual machine may trap each one to its
 * hypervisor. Where it does, every exec pays for it, whatever
 * starts the program: BENCHMARKS.md uses this to tell the host's share of W1 from the launcher's.
 * Build: cc -O2 -o cpuid_cost cpuid_cost.c; run: ./cpuid_cost
 */
#include <cpuid.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static double now_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec * 1e9 + now.tv_nsec;
}

int main(void) {
    unsigned eax, ebx, ecx, edx;
    char vendor[13] = {0};
    __cpuid(0, eax, ebx, ecx, edx);
    memcpy(vendor, &ebx, 4);
    memcpy(vendor + 4, &edx, 4);
    memcpy(vendor + 8, &ecx, 4);
    printf("vendor %s, highest leaf %u\n", vendor, eax);
    enum { ROUNDS = 2000 };
    for (unsigned leaf = 0; leaf <= 4; leaf++) {
        double started = now_ns();
        for (int round = 0; round < ROUNDS; round++) __cpuid_count(leaf, 0, eax, ebx, ecx, edx);
        printf("leaf %u: %.2f us per cpuid\n", leaf, (now_ns() - started) / ROUNDS / 1000);
    }
    return 0;
}
