"""Peak memory of the current process, shared by the benchmark scripts."""

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
