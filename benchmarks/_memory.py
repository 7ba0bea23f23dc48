"""Peak memory of a process, shared by the benchmark scripts: read in this process,
or measured in a fresh one so that each side's peak is its own."""

import multiprocessing as mp
import resource


def peak_rss_mib():
    """This process's peak resident set, MiB.

    ``ru_maxrss`` of a process started by fork + exec (multiprocessing's spawn,
    subprocess) also counts the parent's resident set at the fork, so VmHWM, the
    high-water mark of the process's own memory map, is read where Linux has it.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak():
    """Reset VmHWM to the current resident set (Linux), so that :func:`peak_rss_mib`
    reads the peak of what follows; a no-op elsewhere."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def in_subprocess(target, *args, label=""):
    """``target(*args, queue)`` in a fresh (spawned) process; the small result it puts
    on ``queue`` (a dict), which is read after the process ends."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    proc.join()  # the result is a small dict: the queue cannot fill up
    if proc.exitcode != 0:
        raise RuntimeError(f"benchmark subprocess{label} failed with exit code "
                           f"{proc.exitcode}")
    return queue.get(timeout=10)
