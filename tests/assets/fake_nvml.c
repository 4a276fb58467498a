/*
 * A stand-in for libnvidia-ml.so.1 on machines without an NVIDIA GPU: FAKE_NVML_GPUS devices
 * (default 1) that draw a steady FAKE_NVML_WATTS (default 250) each; device 0 runs the processes
 * whose pids are listed in the file FAKE_NVML_PIDS_FILE (re-read on every call); device
 * FAKE_NVML_LOST (if set) has fallen off the bus (NVML_ERROR_GPU_IS_LOST). It implements the NVML calls llmprobe makes,
 * with NVML's signatures and return codes, so the agent's NVML code, its process join and its
 * energy accounting run end to end in the tests. Built by the e2e test:
 *
 *     cc -shared -fPIC -O2 -o libnvidia-ml.so.1 fake_nvml.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int nvmlReturn_t;
typedef struct fake_device *nvmlDevice_t;

#define NVML_SUCCESS 0
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_GPU_IS_LOST 15

typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;
typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil, memUtil, encUtil, decUtil;
} nvmlProcessUtilizationSample_t;

#define MAX_GPUS 8
struct fake_device { int index; };
static struct fake_device devices[MAX_GPUS] = {{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}};
static double start_s;

#define MAX_PIDS 64
#define PROC_MEM (1ULL << 30)
#define UTIL 60

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double watts(void) {
    const char *w = getenv("FAKE_NVML_WATTS");
    return w ? atof(w) : 250.0;
}

static unsigned int read_pids(unsigned int *pids) {
    const char *path = getenv("FAKE_NVML_PIDS_FILE");
    unsigned int n = 0;
    if (!path) return 0;
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    while (n < MAX_PIDS && fscanf(f, "%u", &pids[n]) == 1) n++;
    fclose(f);
    return n;
}

static unsigned int gpu_count(void) {
    const char *n = getenv("FAKE_NVML_GPUS");
    int v = n ? atoi(n) : 1;
    return v < 1 ? 1 : (v > MAX_GPUS ? MAX_GPUS : (unsigned int)v);
}

/* The listed processes run on device 0 only. */
static unsigned int read_pids_of(nvmlDevice_t d, unsigned int *pids) {
    return d->index == 0 ? read_pids(pids) : 0;
}

static int bad(nvmlDevice_t d) {
    return d < &devices[0] || d >= &devices[gpu_count()];
}

nvmlReturn_t nvmlInit_v2(void) { start_s = now_s(); return NVML_SUCCESS; }
nvmlReturn_t nvmlInitWithFlags(unsigned int flags) { (void)flags; return nvmlInit_v2(); }
nvmlReturn_t nvmlShutdown(void) { return NVML_SUCCESS; }
const char *nvmlErrorString(nvmlReturn_t r) { (void)r; return "fake NVML error"; }

nvmlReturn_t nvmlSystemGetDriverVersion(char *v, unsigned int len) {
    if (!v || len < 8) return NVML_ERROR_INSUFFICIENT_SIZE;
    snprintf(v, len, "580.00");
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *n) {
    if (!n) return NVML_ERROR_INVALID_ARGUMENT;
    *n = gpu_count();
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, nvmlDevice_t *d) {
    if (i >= gpu_count() || !d) return NVML_ERROR_INVALID_ARGUMENT;
    const char *lost = getenv("FAKE_NVML_LOST");
    if (lost && (unsigned int)atoi(lost) == i) return NVML_ERROR_GPU_IS_LOST;
    *d = &devices[i];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int len) {
    if (bad(d) || !name) return NVML_ERROR_INVALID_ARGUMENT;
    snprintf(name, len, "Fake GPU (llmprobe test)");
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int len) {
    if (bad(d) || !uuid) return NVML_ERROR_INVALID_ARGUMENT;
    snprintf(uuid, len, "GPU-fa4e0000-0000-0000-0000-00000000000%d", d->index + 1);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u) {
    if (bad(d) || !u) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int pids[MAX_PIDS];
    int busy = read_pids_of(d, pids) > 0;
    u->gpu = busy ? UTIL : 0;
    u->memory = busy ? 20 : 0;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *m) {
    if (bad(d) || !m) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int pids[MAX_PIDS];
    unsigned int n = read_pids_of(d, pids);
    m->total = 80ULL << 30;
    m->reserved = 0;
    m->used = (1ULL << 29) + n * PROC_MEM;
    m->free = m->total - m->used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *count,
                                                     nvmlProcessInfo_t *infos) {
    if (bad(d) || !count) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int pids[MAX_PIDS];
    unsigned int n = read_pids_of(d, pids);
    if (*count < n || !infos) {
        *count = n;
        return n ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
    }
    for (unsigned int i = 0; i < n; i++) {
        infos[i].pid = pids[i];
        infos[i].usedGpuMemory = PROC_MEM;
        infos[i].gpuInstanceId = 0xFFFFFFFF;
        infos[i].computeInstanceId = 0xFFFFFFFF;
    }
    *count = n;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t d,
                                             nvmlProcessUtilizationSample_t *samples,
                                             unsigned int *count, unsigned long long since) {
    (void)since;
    if (bad(d) || !count) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int pids[MAX_PIDS];
    unsigned int n = read_pids_of(d, pids);
    if (*count < n || !samples) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    unsigned long long ts = (unsigned long long)(now_s() * 1e6);
    for (unsigned int i = 0; i < n; i++) {
        samples[i].pid = pids[i];
        samples[i].timeStamp = ts;
        samples[i].smUtil = UTIL;
        samples[i].memUtil = 20;
        samples[i].encUtil = 0;
        samples[i].decUtil = 0;
    }
    *count = n;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *mw) {
    if (bad(d) || !mw) return NVML_ERROR_INVALID_ARGUMENT;
    *mw = (unsigned int)(watts() * 1000.0);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t d, unsigned long long *mj) {
    if (bad(d) || !mj) return NVML_ERROR_INVALID_ARGUMENT;
    *mj = (unsigned long long)((now_s() - start_s) * watts() * 1000.0);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned int *t) {
    if (bad(d) || !t || sensor != 0) return NVML_ERROR_INVALID_ARGUMENT;
    *t = 50;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t d, int type, unsigned int *mhz) {
    if (bad(d) || !mhz) return NVML_ERROR_INVALID_ARGUMENT;
    *mhz = type == 1 ? 1755 : 1500;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t d, unsigned long long *r) {
    if (bad(d) || !r) return NVML_ERROR_INVALID_ARGUMENT;
    *r = 0;
    return NVML_SUCCESS;
}
