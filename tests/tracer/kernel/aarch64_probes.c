/* Probes made by the real sys/sdt.h (systemtap-sdt-dev:arm64) with GCC for aarch64, read
 * back by tests/tracer/test_argspec_aarch64.py. GCC picks each operand: these functions
 * are shaped so that it picks registers of every size and sign, memory at sp and below
 * another register ([x0, -8]), and constants. Each probe's values are printed by the
 * caller as {"passed": PROBE, "values": [...]}: what the tracer must read back. */
#include <stdint.h>
#include <stdio.h>
#include <sys/sdt.h>

__attribute__((noinline)) void fire_regs(int8_t a, uint8_t b, int16_t c, uint16_t d,
                                         int32_t e, uint32_t f, int64_t g, uint64_t h)
{
    STAP_PROBE8(foreign, regs, a, b, c, d, e, f, g, h);
}

__attribute__((noinline)) void fire_below(const int64_t *end)
{
    /* Values below the pointer: operands [x0, -8], [x0, -12], ... */
    STAP_PROBE4(foreign, below, end[-1], ((const int32_t *)end)[-3],
                ((const int16_t *)end)[-7], ((const int8_t *)end)[-15]);
}

__attribute__((noinline)) void fill(int64_t *v, int64_t x, int32_t y)
{
    v[0] = 0;
    v[1] = x;
    ((int32_t *)v)[4] = y;
    ((uint16_t *)v)[10] = 0xfedc;
    ((int8_t *)v)[22] = -100;
}

__attribute__((noinline)) void fire_frame(int64_t x, int32_t y)
{
    /* Values in this function's frame: operands [sp, 32], ... */
    int64_t v[4];
    fill(v, x, y);
    STAP_PROBE4(foreign, frame, v[1], ((int32_t *)v)[4], ((uint16_t *)v)[10], ((int8_t *)v)[22]);
}

#define CONSTS 42, -7, (int8_t)-1, (uint16_t)65535, 0x123456789abcdefLL
#define PROBE5(...) STAP_PROBE5(__VA_ARGS__) /* expands CONSTS before counting */

__attribute__((noinline)) void fire_consts(void)
{
    PROBE5(foreign, consts, CONSTS);
}

void probes(void)
{
    int64_t buf[4] = {0, 0, 0, 0};

    fire_regs(-1, 255, -30000, 60000, -2000000000, 4000000000u, -9000000000000000000LL,
              18000000000000000000ULL);
    printf("{\"passed\": \"regs\", \"values\": [%d, %u, %d, %u, %d, %u, %lld, %llu]}\n", -1, 255,
           -30000, 60000, -2000000000, 4000000000u, -9000000000000000000LL, 18000000000000000000ULL);

    buf[3] = -5;                                   /* end[-1] */
    ((int32_t *)buf)[5] = -123456789;              /* ((int32_t *)end)[-3] */
    ((int16_t *)buf)[9] = 31000;                   /* ((int16_t *)end)[-7] */
    ((int8_t *)buf)[17] = -2;                      /* ((int8_t *)end)[-15] */
    fire_below(buf + 4);
    printf("{\"passed\": \"below\", \"values\": [%lld, %d, %d, %d]}\n", (long long)buf[3],
           ((int32_t *)buf)[5], ((int16_t *)buf)[9], ((int8_t *)buf)[17]);

    fire_frame(-77, 123456);
    printf("{\"passed\": \"frame\", \"values\": [%d, %d, %d, %d]}\n", -77, 123456, 0xfedc, -100);

    fire_consts();
    printf("{\"passed\": \"consts\", \"values\": [%d, %d, %d, %d, %lld]}\n", CONSTS);
    fflush(stdout);
}
