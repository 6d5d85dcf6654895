/*
 * vartest: write, read back and delete non-volatile UEFI variables through
 * efivarfs from one CPU of the Linux guest, timing each operation.
 *
 *   vartest CPU COUNT PREFIX
 *
 * Pins itself to CPU (sched_setaffinity; the suite also starts it under
 * taskset), then for i = 0 .. COUNT-1 creates PREFIX<i>-<GUID> with
 * attributes NV|BS|RT and 16..215 bytes of data that depend on CPU and i,
 * reads it back (attributes and data compared byte by byte), deletes it
 * (clearing the immutable flag efivarfs sets on variables it does not
 * know, as chattr -i does) and checks it is gone. Every variable write and delete is an SMI in an
 * OVMF built with SMM; reads come from the runtime variable cache.
 *
 * Output, one line per variable and one summary line:
 *   VAR cpu=C i=I on=C' write_us=W read_us=R delete_us=D ok=1
 *   BAD cpu=C i=I what=... (details)
 *   SUMMARY cpu=C n=N ok=K bad=B write_med_us=W read_med_us=R delete_med_us=D
 *
 * Built statically by the suite (gcc -static) into the guest's initramfs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define EFIVARS "/sys/firmware/efi/efivars"
/* Vendor GUID of the suite's test variables (this project's own). */
#define TEST_GUID "6d6d6d70-6532-6574-8065-323374657374"
#define ATTRIBUTES 7u /* NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS */
#define MAX_DATA 256
#define MAX_COUNT 4096

static long now_us(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000L + ts.tv_nsec / 1000;
}

static int cmp_long(const void *a, const void *b)
{
  long x = *(const long *)a, y = *(const long *)b;

  return (x > y) - (x < y);
}

static long median(long *v, int n)
{
  if (n == 0) {
    return -1;
  }
  qsort(v, (size_t)n, sizeof(*v), cmp_long);
  return (n % 2) ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static size_t fill(unsigned char *buf, int cpu, int i)
{
  size_t size = 16 + (size_t)((i * 37 + cpu * 11) % 200);
  size_t k;
  int head;

  memcpy(buf, &(uint32_t){ATTRIBUTES}, 4);
  head = snprintf((char *)buf + 4, size, "mm-mp cpu %d var %d ", cpu, i);
  for (k = (size_t)head; k < size; k++) {
    buf[4 + k] = (unsigned char)(i * 31 + cpu * 7 + (int)k);
  }
  return 4 + size;
}

/* efivarfs marks the variables it does not know immutable: clear the
   flag (chattr -i) so that unlink may delete it. */
static int make_removable(const char *path)
{
  int fd = open(path, O_RDONLY);
  int flags = 0, rc = -1;

  if (fd < 0) {
    return -1;
  }
  if (ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0) {
    flags &= ~FS_IMMUTABLE_FL;
    rc = ioctl(fd, FS_IOC_SETFLAGS, &flags);
  }
  close(fd);
  return rc;
}

static void hex(const char *tag, const unsigned char *p, size_t n)
{
  size_t k;

  printf(" %s=", tag);
  for (k = 0; k < n && k < 48; k++) {
    printf("%02x", p[k]);
  }
}

int main(int argc, char **argv)
{
  static long w_us[MAX_COUNT], r_us[MAX_COUNT], d_us[MAX_COUNT];
  unsigned char want[4 + MAX_DATA], got[4 + MAX_DATA + 64];
  char path[256];
  cpu_set_t set;
  int cpu, count, i, ok = 0, bad = 0, nw = 0, nr = 0, nd = 0;

  if (argc != 4) {
    fprintf(stderr, "usage: vartest CPU COUNT PREFIX\n");
    return 2;
  }
  cpu = atoi(argv[1]);
  count = atoi(argv[2]);
  if (cpu < 0 || cpu >= CPU_SETSIZE || count < 1 || count > MAX_COUNT) {
    fprintf(stderr, "vartest: bad CPU or COUNT\n");
    return 2;
  }
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0) {
    printf("BAD cpu=%d what=affinity errno=%d\n", cpu, errno);
    printf("SUMMARY cpu=%d n=%d ok=0 bad=%d write_med_us=-1 read_med_us=-1 delete_med_us=-1\n", cpu, count, count);
    return 1;
  }

  for (i = 0; i < count; i++) {
    size_t len = fill(want, cpu, i);
    long t0, t1, t2, t3;
    ssize_t n;
    int fd, on = sched_getcpu(), good = 1;

    snprintf(path, sizeof(path), EFIVARS "/%s%d-" TEST_GUID, argv[3], i);
    t0 = now_us();
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    n = (fd >= 0) ? write(fd, want, len) : -1;
    if (fd < 0 || n != (ssize_t)len || close(fd) != 0) {
      printf("BAD cpu=%d i=%d what=write errno=%d\n", cpu, i, errno);
      bad++;
      unlink(path);
      continue;
    }
    t1 = now_us();
    w_us[nw++] = t1 - t0;

    fd = open(path, O_RDONLY);
    n = (fd >= 0) ? read(fd, got, sizeof(got)) : -1;
    if (fd >= 0) {
      close(fd);
    }
    t2 = now_us();
    if (n != (ssize_t)len || memcmp(got, want, len) != 0) {
      size_t k = 0;

      while (n > 0 && k < (size_t)n && k < len && got[k] == want[k]) {
        k++;
      }
      printf("BAD cpu=%d i=%d what=readback len=%zd want_len=%zu first_diff=%zu", cpu, i, n, len, k);
      hex("want", want, len);
      if (n > 0) {
        hex("got", got, (size_t)n);
      }
      printf("\n");
      good = 0;
    } else {
      r_us[nr++] = t2 - t1;
    }

    if (make_removable(path) != 0 || unlink(path) != 0) {
      printf("BAD cpu=%d i=%d what=delete errno=%d\n", cpu, i, errno);
      good = 0;
    } else if (access(path, F_OK) == 0) {
      printf("BAD cpu=%d i=%d what=still-there\n", cpu, i);
      good = 0;
    }
    t3 = now_us();
    if (good) {
      d_us[nd++] = t3 - t2;
    }
    printf("VAR cpu=%d i=%d on=%d write_us=%ld read_us=%ld delete_us=%ld ok=%d\n", cpu, i, on, t1 - t0, t2 - t1,
           t3 - t2, good);
    if (good) {
      ok++;
    } else {
      bad++;
    }
  }
  printf("SUMMARY cpu=%d n=%d ok=%d bad=%d write_med_us=%ld read_med_us=%ld delete_med_us=%ld\n", cpu, count, ok, bad,
         median(w_us, nw), median(r_us, nr), median(d_us, nd));
  return bad ? 1 : 0;
}
