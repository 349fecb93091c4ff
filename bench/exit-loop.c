/*
 * The floor for exit-handling cost: the same guest as bench/exits.ts, run by
 * a plain C KVM_RUN loop. Usage: exit-loop N  -> prints "ns_per_exit <x>".
 * The guest (real mode) does N `out 0x10, al` then hlt; the loop counts PIO
 * exits on port 0x10 the way flintvm's worker hands them to a bus device.
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 100000;
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) { perror("open /dev/kvm"); return 1; }
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  size_t memsz = 0x10000;
  uint8_t *mem = mmap(NULL, memsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  /* mov ecx, n; loop: out 0x10, al; dec ecx; jnz loop; hlt  (16-bit code, 66h prefixes for 32-bit ops) */
  uint8_t code[] = {0x66, 0xb9, 0, 0, 0, 0, 0xe6, 0x10, 0x66, 0x49, 0x75, 0xfa, 0xf4};
  memcpy(code + 2, &n, 4);
  memcpy(mem + 0x1000, code, sizeof code);
  struct kvm_userspace_memory_region region = {.slot = 0, .guest_phys_addr = 0, .memory_size = memsz, .userspace_addr = (uint64_t)mem};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) { perror("memory region"); return 1; }
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  int runsz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct kvm_run *run = mmap(NULL, runsz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  struct kvm_sregs sregs;
  ioctl(vcpu, KVM_GET_SREGS, &sregs);
  sregs.cs.base = 0; sregs.cs.selector = 0;
  ioctl(vcpu, KVM_SET_SREGS, &sregs);
  struct kvm_regs regs = {.rip = 0x1000, .rflags = 2};
  ioctl(vcpu, KVM_SET_REGS, &regs);
  volatile uint64_t sink = 0;
  long exits = 0;
  double t0 = now_ns();
  for (;;) {
    if (ioctl(vcpu, KVM_RUN, 0) < 0) { perror("KVM_RUN"); return 1; }
    if (run->exit_reason == KVM_EXIT_IO && run->io.port == 0x10) {
      sink += *((uint8_t *)run + run->io.data_offset);
      exits++;
    } else if (run->exit_reason == KVM_EXIT_HLT) {
      break;
    } else {
      fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
      return 1;
    }
  }
  double t1 = now_ns();
  printf("exits %ld ns_per_exit %.1f\n", exits, (t1 - t0) / exits);
  return exits == n ? 0 : 1;
}
