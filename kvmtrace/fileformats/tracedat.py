"""The trace.dat layout (trace-cmd.dat(5), v6 and v7) and the kernel ring buffer's record layout:
the constants that the reader and the writer share, in one place. Standard library only."""

from __future__ import annotations

MAGIC = b"\x17\x08\x44tracing"

# Ring-buffer event types (kernel/trace/ring_buffer.c).
TYPE_PADDING = 29
TYPE_TIME_EXTEND = 30
TYPE_TIME_STAMP = 31
TS_BITS = 27
TS_MASK = (1 << TS_BITS) - 1
MAX_SMALL_DATA = 28 * 4
COMMIT_MASK = (1 << 27) - 1
RB_MISSED_EVENTS = 1 << 31
RB_MISSED_STORED = 1 << 30

# trace-cmd option / section ids (trace-cmd-private.h).
OPT_DONE = 0
OPT_DATE = 1
OPT_CPUSTAT = 2
OPT_BUFFER = 3
OPT_TRACECLOCK = 4
OPT_UNAME = 5
OPT_HOOK = 6
OPT_OFFSET = 7
OPT_CPUCOUNT = 8
OPT_VERSION = 9
OPT_PROCMAPS = 10
OPT_TRACEID = 11
OPT_TIME_SHIFT = 12
OPT_GUEST = 13
OPT_TSC2NSEC = 14
OPT_STRINGS = 15
OPT_HEADER_INFO = 16
OPT_FTRACE_EVENTS = 17
OPT_EVENT_FORMATS = 18
OPT_KALLSYMS = 19
OPT_PRINTK = 20
OPT_CMDLINES = 21
OPT_BUFFER_TEXT = 22
SEC_FL_COMPRESS = 1

#: ``events/header_event`` as the kernel prints it (independent of the long size).
HEADER_EVENT_TEXT = (
    "# compressed entry header\n"
    "\ttype_len    :    5 bits\n"
    "\ttime_delta  :   27 bits\n"
    "\tarray       :   32 bits\n"
    "\n"
    "\tpadding     : type == 29\n"
    "\ttime_extend : type == 30\n"
    "\ttime_stamp : type == 31\n"
    "\tdata max type_len  == 28\n"
)


def header_page_text(long_size: int = 8, page_size: int = 4096) -> str:
    """``events/header_page`` for a kernel with a ``long_size``-byte ``long`` (the commit word)."""
    _check_long_size(long_size)
    data = 8 + long_size
    return (
        "\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n"
        f"\tfield: local_t commit;\toffset:8;\tsize:{long_size};\tsigned:1;\n"
        "\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n"
        f"\tfield: char data;\toffset:{data};\tsize:{page_size - data};\tsigned:0;\n"
    )


def _check_long_size(long_size: int) -> None:
    if long_size not in (4, 8):
        raise ValueError(f"long size must be 4 or 8, got {long_size}")
