#!/usr/bin/env python3
"""Where a running csagent's RSS in its own binary is, by ELF segment.

    sudo python3 scripts/rss-binary.py PID            # resident pages per segment
    sudo python3 scripts/rss-binary.py PID --drop     # then page out the clean ones

Prints, for each mapping of the process's executable (from /proc/PID/smaps): the
segment it is (the ELF program headers of the file), its size, Rss, and how much
of that is private dirty (copy-on-write after relocation: .data.rel.ro, .got) or
clean file pages (text, rodata, eh_frame: page cache). With --drop it asks the
kernel (process_madvise MADV_PAGEOUT) to page out the clean file-backed pages of
the binary, so a later run of this script shows what the idle agent touches again
(its idle working set, fault-around included) rather than what start-up touched
once. Diagnostic only: the pages come back from disk on the next use.
"""
import ctypes
import os
import struct
import sys

PAGE = os.sysconf("SC_PAGE_SIZE")
SYS_PIDFD_OPEN = 434
SYS_PROCESS_MADVISE = 440
MADV_PAGEOUT = 21


def load_segments(path):
    """(vaddr, memsz, flags, offset) of every PT_LOAD, plus the GNU_RELRO range."""
    with open(path, "rb") as f:
        ehdr = f.read(64)
        phoff, = struct.unpack_from("<Q", ehdr, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", ehdr, 0x36)
        f.seek(phoff)
        loads, relro = [], None
        for _ in range(phnum):
            p_type, p_flags, p_offset, p_vaddr, _pa, _fsz, p_memsz, _al = struct.unpack(
                "<IIQQQQQQ", f.read(phentsize)[:56])
            if p_type == 1:
                loads.append((p_vaddr, p_memsz, p_flags, p_offset))
            elif p_type == 0x6474E552:
                relro = (p_vaddr, p_vaddr + p_memsz)
        return loads, relro


def smaps_of_exe(pid, exe):
    out, cur = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5 and ":" not in parts[0]:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                path = parts[5] if len(parts) > 5 else ""
                cur = {"lo": lo, "hi": hi, "perms": parts[1], "off": int(parts[2], 16),
                       "path": path} if path == exe else None
                if cur is not None:
                    out.append(cur)
            elif cur is not None and parts[0].endswith(":") and len(parts) >= 2 and parts[1].isdigit():
                cur[parts[0][:-1]] = int(parts[1])
    return out


def main():
    pid = int(sys.argv[1])
    drop = "--drop" in sys.argv[2:]
    exe = os.readlink(f"/proc/{pid}/exe")
    loads, relro = load_segments(f"/proc/{pid}/exe")
    maps = smaps_of_exe(pid, exe)
    base = min(m["lo"] - m["off"] for m in maps)  # PIE load bias (first segment at offset 0)
    total = 0
    print(f"{'mapping':<28}{'perms':<6}{'size KiB':>10}{'Rss KiB':>10}{'clean KiB':>10}{'dirty KiB':>10}  what")
    for m in maps:
        va = m["lo"] - base
        what = []
        for (v, sz, fl, _o) in loads:
            if v < va + (m["hi"] - m["lo"]) and va < v + sz:
                what.append({4: "R", 5: "R+X", 6: "RW"}.get(fl, str(fl)))
        if relro and relro[0] < va + (m["hi"] - m["lo"]) and va < relro[1]:
            what.append("RELRO")
        clean = m.get("Private_Clean", 0) + m.get("Shared_Clean", 0)
        dirty = m.get("Private_Dirty", 0) + m.get("Shared_Dirty", 0)
        total += m.get("Rss", 0)
        print(f"{m['lo']:x}-{m['hi']:x} {m['perms']:<6}{(m['hi'] - m['lo']) // 1024:>10}"
              f"{m.get('Rss', 0):>10}{clean:>10}{dirty:>10}  {'/'.join(what)}")
    print(f"binary total Rss: {total} KiB ({total / 1024:.1f} MiB)")
    if not drop:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = libc.syscall(SYS_PIDFD_OPEN, pid, 0)
    if pidfd < 0:
        sys.exit(f"pidfd_open: {os.strerror(ctypes.get_errno())}")

    class IoVec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
    dropped = 0
    for m in maps:
        # Only mappings without private dirty pages: a written (relocated) page
        # is anonymous memory and must not be touched here.
        if m.get("Private_Dirty", 0) or m.get("Anonymous", 0) or "w" in m["perms"]:
            continue
        iov = IoVec(m["lo"], m["hi"] - m["lo"])
        r = libc.syscall(SYS_PROCESS_MADVISE, pidfd, ctypes.byref(iov), 1, MADV_PAGEOUT, 0)
        if r < 0:
            sys.exit(f"process_madvise: {os.strerror(ctypes.get_errno())}")
        dropped += m.get("Rss", 0)
    os.close(pidfd)
    print(f"asked the kernel to page out {dropped} KiB of clean binary pages")


if __name__ == "__main__":
    main()
