# cython: language_level=3
"""The streaming core: the per-line work of sending G-code, done natively.

Python hands it whole chunks of a job file and gets back cleaned commands with
their byte offsets, and frames each command as ``N<n> <cmd>*<xor>\\n`` for the
Marlin host protocol.  Nothing here is called per character from Python.
"""
from libc.string cimport memchr


cpdef int checksum(bytes data):
    """XOR of all bytes: Marlin's line checksum (catches any single corrupted byte)."""
    cdef const unsigned char* p = data
    cdef Py_ssize_t n = len(data)
    cdef Py_ssize_t i
    cdef unsigned char x = 0
    for i in range(n):
        x ^= p[i]
    return x


cpdef bytes frame(long long line_number, bytes command):
    """``N<line> <command>*<checksum>\\n``, the checksum covering everything before ``*``."""
    cdef bytes body = b"N%d %s" % (line_number, command)
    return b"%s*%d\n" % (body, checksum(body))


cpdef bytes clean(bytes raw):
    """Strip a ``;`` comment, CR/LF and surrounding whitespace; b'' if nothing remains."""
    cdef const unsigned char* p = raw
    cdef Py_ssize_t n = len(raw)
    cdef Py_ssize_t start = 0, end
    cdef const void* semi = memchr(p, 59, n)  # ';'
    end = n if semi == NULL else <Py_ssize_t>(<const unsigned char*>semi - p)
    while start < end and (p[start] == 32 or p[start] == 9 or p[start] == 13 or p[start] == 10):
        start += 1
    while end > start and (p[end - 1] == 32 or p[end - 1] == 9 or p[end - 1] == 13 or p[end - 1] == 10):
        end -= 1
    return raw[start:end]


cdef class LineSplitter:
    """Turns arbitrary chunks of a file into (byte_offset, command) pairs.

    ``byte_offset`` is where the raw line starts in the file, so a checkpoint
    can resume by seeking there.  Blank and comment-only lines are skipped but
    counted in the offsets.  A line longer than ``max_line_bytes`` is reported
    as ``(offset, None)`` so the caller can refuse it by position.
    """

    cdef bytearray _pending
    cdef long long _pending_offset
    cdef long long _offset
    cdef Py_ssize_t max_line_bytes
    cdef bint _overlong

    def __init__(self, long long start_offset=0, Py_ssize_t max_line_bytes=4096):
        self._pending = bytearray()
        self._pending_offset = start_offset
        self._offset = start_offset
        self.max_line_bytes = max_line_bytes
        self._overlong = False

    @property
    def offset(self):
        """Bytes consumed so far (start of the unfinished line, if any)."""
        return self._pending_offset

    def feed(self, bytes chunk):
        """Return the complete lines of ``chunk`` (with what was pending) as a list."""
        cdef list out = []
        cdef const unsigned char* p = chunk
        cdef Py_ssize_t n = len(chunk)
        cdef Py_ssize_t pos = 0, nl
        cdef const void* hit
        cdef bytes line, cmd
        while pos < n:
            hit = memchr(p + pos, 10, n - pos)
            if hit == NULL:
                if not self._overlong:
                    self._pending += chunk[pos:]
                    if len(self._pending) > self.max_line_bytes:
                        self._overlong = True
                        self._pending = bytearray()
                self._offset += n - pos
                break
            nl = <Py_ssize_t>(<const unsigned char*>hit - p)
            if self._overlong:
                out.append((self._pending_offset, None))
                self._overlong = False
            else:
                if self._pending:
                    self._pending += chunk[pos:nl]
                    line = bytes(self._pending)
                    self._pending = bytearray()
                else:
                    line = chunk[pos:nl]
                if len(line) > self.max_line_bytes:
                    out.append((self._pending_offset, None))
                else:
                    cmd = clean(line)
                    if cmd:
                        out.append((self._pending_offset, cmd))
            self._offset += nl + 1 - pos
            self._pending_offset = self._offset
            pos = nl + 1
        return out

    def finish(self):
        """Lines left at end of file without a final newline."""
        cdef list out = []
        cdef bytes cmd
        if self._overlong:
            out.append((self._pending_offset, None))
        elif self._pending:
            cmd = clean(bytes(self._pending))
            if cmd:
                out.append((self._pending_offset, cmd))
        self._pending = bytearray()
        self._overlong = False
        self._pending_offset = self._offset
        return out
