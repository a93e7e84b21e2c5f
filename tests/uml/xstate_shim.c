/*
 * LD_PRELOAD shim for Debian's user-mode Linux 6.1 (`linux.uml`) on hosts whose CPUs have
 * AVX-512 or AMX.
 *
 * Why: UML 6.1 saves and restores a guest process's extended FPU state with
 * PTRACE_GETREGSET/PTRACE_SETREGSET(NT_X86_XSTATE) into a fixed 832-byte buffer
 * (legacy area + header + YMM). On such hosts the kernel's XSAVE area is larger:
 *   - PTRACE_SETREGSET rejects any buffer whose size differs from the host's full XSAVE
 *     size (EFAULT), so UML panics at the first user process
 *     ("userspace - ptrace set fp regs failed, errno = 14");
 *   - UML handles a guest page fault by delivering SIGSEGV to a stub handler inside the
 *     host process; signal delivery resets the FPU to its init state, and UML then
 *     restores only what fits in its buffer, so AVX-512 registers (zmm16-31, k0-7, upper
 *     halves of zmm) are zeroed at every page fault. glibc's EVEX string functions,
 *     V8 and Deno then crash or compute garbage inside the guest.
 *
 * What: ptrace() is wrapped. For NT_X86_XSTATE requests the shim keeps, per UML-side
 * buffer address (UML has one buffer per guest thread), a full-size copy of the state last
 * read into that buffer. A SETREGSET writes UML's bytes over that full copy and sets the
 * full state, so components UML cannot hold survive exactly as they were when UML saved
 * them. Everything else passes straight to the ptrace system call.
 *
 * This is test-environment plumbing only: nothing in the product depends on it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define NT_X86_XSTATE_NOTE 0x202
#define FULL_SIZE 32768 /* larger than any x86 XSAVE area (AMX: ~11 KiB) */
#define SLOT_COUNT 2048
#define XSTATE_HEADER_OFFSET 512
#define UML_XSTATE_SIZE 832

struct slot {
  void *key;
  unsigned char *state;
};

static struct slot slots[SLOT_COUNT];
static unsigned char scratch[FULL_SIZE] __attribute__((aligned(64)));

static long raw_ptrace(long request, long pid, void *addr, void *data) {
  return syscall(SYS_ptrace, request, pid, addr, data);
}

/* Finds the saved full state for a UML buffer address; creates it when asked to. */
static struct slot *find_slot(void *key, int create) {
  size_t home = ((uintptr_t)key >> 4) % SLOT_COUNT;
  for (size_t i = 0; i < SLOT_COUNT; i++) {
    struct slot *s = &slots[(home + i) % SLOT_COUNT];
    if (s->key == key) return s;
    if (s->key == NULL) {
      if (!create) return NULL;
      s->state = malloc(FULL_SIZE);
      if (s->state == NULL) return NULL;
      s->key = key;
      return s;
    }
  }
  if (!create) return NULL;
  slots[home].key = key; /* table full: take over the home slot */
  return &slots[home];
}

static long get_xstate(pid_t pid, void *addr, struct iovec *iov) {
  struct slot *s = find_slot(iov->iov_base, 1);
  unsigned char *state = s ? s->state : scratch;
  struct iovec full = {state, FULL_SIZE};
  if (raw_ptrace(PTRACE_GETREGSET, pid, addr, &full) < 0) return -1;
  size_t n = iov->iov_len < full.iov_len ? iov->iov_len : full.iov_len;
  memcpy(iov->iov_base, state, n);
  iov->iov_len = n;
  return 0;
}

static long set_xstate(pid_t pid, void *addr, struct iovec *iov) {
  struct slot *s = find_slot(iov->iov_base, 0);
  /* Current full state: its size, and the base when UML never read into this buffer. */
  struct iovec current = {scratch, FULL_SIZE};
  if (raw_ptrace(PTRACE_GETREGSET, pid, addr, &current) < 0) return -1;
  unsigned char *state = s ? s->state : scratch;
  size_t n = iov->iov_len < current.iov_len ? iov->iov_len : current.iov_len;
  uint64_t kept, given;
  memcpy(&kept, state + XSTATE_HEADER_OFFSET, sizeof kept);
  memcpy(&given, (unsigned char *)iov->iov_base + XSTATE_HEADER_OFFSET, sizeof given);
  memcpy(state, iov->iov_base, n);
  /* x87 + SSE (+ AVX when UML's buffer covers it) come from UML, the rest from the copy. */
  uint64_t mask = n >= UML_XSTATE_SIZE ? 0x7 : 0x3;
  uint64_t features = (kept & ~mask) | (given & mask);
  memcpy(state + XSTATE_HEADER_OFFSET, &features, sizeof features);
  struct iovec full = {state, current.iov_len};
  return raw_ptrace(PTRACE_SETREGSET, pid, addr, &full);
}

long ptrace(enum __ptrace_request request, ...) {
  va_list ap;
  va_start(ap, request);
  pid_t pid = va_arg(ap, pid_t);
  void *addr = va_arg(ap, void *);
  void *data = va_arg(ap, void *);
  va_end(ap);

  if ((long)addr == NT_X86_XSTATE_NOTE) {
    if (request == PTRACE_GETREGSET) return get_xstate(pid, addr, data);
    if (request == PTRACE_SETREGSET) return set_xstate(pid, addr, data);
  }
  if (request == PTRACE_PEEKTEXT || request == PTRACE_PEEKDATA || request == PTRACE_PEEKUSER) {
    long word;
    if (raw_ptrace(request, pid, addr, &word) < 0) return -1;
    errno = 0;
    return word;
  }
  return raw_ptrace(request, pid, addr, data);
}
