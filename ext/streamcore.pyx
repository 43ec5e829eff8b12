# cython: language_level=3
"""The streaming core: the per-line work of sending G-code, done natively.

Python hands it whole chunks of a job file and gets back cleaned commands with
their byte offsets, and frames each command as ``N<n> <cmd>*<xor>\\n`` for the
Marlin host protocol.  Nothing here is called per character from Python.
"""
from libc.string cimport memchr, memcpy


cpdef int checksum(bytes data):
    """XOR of all bytes: Marlin's line checksum (catches any single corrupted byte)."""
    cdef const unsigned char* p = data
    cdef Py_ssize_t n = len(data)
    cdef Py_ssize_t i
    cdef unsigned char x = 0
    for i in range(n):
        x ^= p[i]
    return x


from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdlib cimport malloc as _malloc, free as _free


cdef inline Py_ssize_t _put_int(char* out, long long value):
    """Decimal digits of ``value`` at ``out``; returns how many were written."""
    cdef char tmp[24]
    cdef Py_ssize_t n = 0, i
    cdef bint negative = value < 0
    cdef unsigned long long v = -value if negative else value
    if v == 0:
        tmp[0] = 48
        n = 1
    while v:
        tmp[n] = 48 + (v % 10)
        v //= 10
        n += 1
    i = 0
    if negative:
        out[0] = 45
        i = 1
    while n:
        n -= 1
        out[i] = tmp[n]
        i += 1
    return i


cpdef bytes frame(long long line_number, bytes command):
    """``N<line> <command>*<checksum>\\n``, the checksum covering everything before ``*``.

    Built in one C buffer: this runs once per line sent.
    """
    cdef Py_ssize_t n = len(command)
    cdef const char* src = command
    cdef char stack[160]
    cdef char* buf = stack
    cdef Py_ssize_t k, i
    cdef unsigned char x = 0
    if n + 48 > 160:
        buf = <char*>_malloc(n + 48)
        if buf == NULL:
            raise MemoryError()
    buf[0] = 78  # 'N'
    k = 1 + _put_int(buf + 1, line_number)
    buf[k] = 32
    k += 1
    memcpy(buf + k, src, n)
    k += n
    for i in range(k):
        x ^= <unsigned char>buf[i]
    buf[k] = 42  # '*'
    k += 1
    k += _put_int(buf + k, x)
    buf[k] = 10
    k += 1
    try:
        return PyBytes_FromStringAndSize(buf, k)
    finally:
        if buf != stack:
            _free(buf)


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


# ---------------------------------------------------------------------------------------------
# The send window: replies in, bytes to write and events out.
#
# Marlin facts this relies on (Marlin 2.x src/gcode/queue.cpp, docs at marlinfw.org "G-code
# host protocol"): every numbered line is answered by exactly one ``ok`` (an errored line by
# ``Error:... Last Line: k``, ``Resend: k+1``, ``ok``), except lines the firmware flushed from
# its receive buffer after an error, which get no answer at all; with ADVANCED_OK the ``ok``
# carries ``N<last line> P<free planner slots> B<free command slots>``.  A line the firmware
# has already seen (N <= last line) is refused with ``Resend: last+1``: that is how a probe
# learns the truth after a lost ``ok``.
# ---------------------------------------------------------------------------------------------
from libc.stdlib cimport malloc, free, strtod, strtoll
from libc.string cimport memcmp

# event kinds (ints so the hot path builds no strings)
EV_TEMPERATURE = 1
EV_ERROR = 2
EV_FATAL = 3
EV_START = 4
EV_ACTION = 5
EV_CAPABILITY = 6
EV_FIRMWARE = 7
EV_OTHER = 8
EV_RESEND = 9
EV_BUSY = 10
EV_WAIT = 11

cdef const char* _FATAL[7]
_FATAL[0] = b"halted"
_FATAL[1] = b"kill"
_FATAL[2] = b"thermal runaway"
_FATAL[3] = b"mintemp"
_FATAL[4] = b"maxtemp"
_FATAL[5] = b"heating failed"
_FATAL[6] = b"thermal malfunction"

#: most lines in flight however large a command queue ADVANCED_OK reports (a resend or a pause has to
#: wait for all of them)
LINE_CAP = 32

#: commands that legitimately keep the printer silent for minutes
LONG_HEADS = (b"G28", b"G29", b"M109", b"M190", b"M400", b"G4", b"M600", b"M303", b"M191")


cdef bint _is_long(bytes command):
    """G28 G29 G4 M109 M190 M191 M400 M600 M303: commands that keep the firmware silent for long."""
    cdef const unsigned char* p = command
    cdef Py_ssize_t n = len(command), k = 1
    cdef long long number = 0
    if n < 2 or (p[0] != 71 and p[0] != 77):  # 'G' 'M'
        return False
    while k < n and 48 <= p[k] <= 57 and k < 6:
        number = number * 10 + (p[k] - 48)
        k += 1
    if k == 1 or (k < n and p[k] != 32 and p[k] != 9):
        return False
    if p[0] == 71:
        return number == 28 or number == 29 or number == 4
    return number == 109 or number == 190 or number == 191 or number == 400 or number == 600 or number == 303


DEF KIND_LONG = 1    # a command that keeps the firmware silent for long (_is_long)
DEF KIND_M105 = 2    # a temperature query: answered ``ok T:...`` on one line, an ok that names its line


cdef unsigned char _kind(bytes command):
    """The ring's per-line flags: KIND_LONG, KIND_M105."""
    cdef const unsigned char* p = command
    cdef Py_ssize_t n = len(command)
    if n >= 4 and p[0] == 77 and p[1] == 49 and p[2] == 48 and p[3] == 53 and (n == 4 or p[4] == 32 or p[4] == 9):
        return KIND_M105
    return KIND_LONG if _is_long(command) else 0


cdef inline bint _starts(const unsigned char* p, Py_ssize_t n, const char* prefix, Py_ssize_t k):
    return n >= k and memcmp(p, prefix, k) == 0


cdef inline unsigned char _lower(unsigned char c):
    return c + 32 if 65 <= c <= 90 else c


cdef bint _contains_ci(const unsigned char* p, Py_ssize_t n, const char* needle):
    cdef Py_ssize_t k = 0, i, j
    while needle[k] != 0:
        k += 1
    for i in range(n - k + 1):
        for j in range(k):
            if _lower(p[i + j]) != <unsigned char>needle[j]:
                break
        else:
            return True
    return False


cdef Py_ssize_t _find(const unsigned char* p, Py_ssize_t n, const char* needle, Py_ssize_t k, Py_ssize_t start):
    cdef Py_ssize_t i
    for i in range(start, n - k + 1):
        if memcmp(p + i, needle, k) == 0:
            return i
    return -1


cdef double _number_after(const unsigned char* p, Py_ssize_t n, Py_ssize_t pos, bint* ok):
    """Parse a float starting at ``pos`` (spaces and a '/' allowed before it)."""
    cdef char buf[32]
    cdef Py_ssize_t i = pos, k = 0
    cdef char* end
    while i < n and (p[i] == 32 or p[i] == 47):
        i += 1
    while i < n and k < 31 and (48 <= p[i] <= 57 or p[i] == 46 or p[i] == 45):
        buf[k] = p[i]
        k += 1
        i += 1
    buf[k] = 0
    if k == 0:
        ok[0] = False
        return 0.0
    cdef double value = strtod(buf, &end)
    ok[0] = end != buf
    return value


cpdef object parse_temperatures(bytes line):
    """``T:210.0 /210.0 B:60 /60 @:64 B@:30`` -> (hotend, target, bed, target, hotend_pwm, bed_pwm) or None.

    PWM is Marlin's 0..127 scale as reported; missing parts are None (bed) or None (pwm).
    """
    cdef const unsigned char* p = line
    cdef Py_ssize_t n = len(line)
    cdef bint ok1 = False, ok2 = False
    cdef Py_ssize_t t = _find(p, n, b"T:", 2, 0)
    if t < 0:
        return None
    cdef double hot = _number_after(p, n, t + 2, &ok1)
    if not ok1:
        return None
    cdef Py_ssize_t slash = t + 2
    while slash < n and p[slash] != 47 and p[slash] != 66:  # '/' or 'B'
        slash += 1
    cdef double hot_target = 0.0
    if slash < n and p[slash] == 47:
        hot_target = _number_after(p, n, slash + 1, &ok2)
        if not ok2:
            return None
    else:
        return None
    bed = bed_target = hot_pwm = bed_pwm = None
    cdef Py_ssize_t b = _find(p, n, b"B:", 2, t)
    cdef double v
    if b >= 0:
        v = _number_after(p, n, b + 2, &ok1)
        if ok1:
            bed = v
            slash = b + 2
            while slash < n and p[slash] != 47 and p[slash] != 32:
                slash += 1
            while slash < n and p[slash] == 32:
                slash += 1
            if slash < n and p[slash] == 47:
                v = _number_after(p, n, slash + 1, &ok2)
                if ok2:
                    bed_target = v
    cdef Py_ssize_t a = _find(p, n, b" @:", 3, t)
    if a >= 0:
        v = _number_after(p, n, a + 3, &ok1)
        if ok1:
            hot_pwm = v
    a = _find(p, n, b"B@:", 3, t)
    if a >= 0:
        v = _number_after(p, n, a + 3, &ok1)
        if ok1:
            bed_pwm = v
    return (hot, hot_target, bed, bed_target, hot_pwm, bed_pwm)


cdef bint _is_advanced_ok(const unsigned char* p, Py_ssize_t n):
    """Exactly ``ok N<digits> P<digits> B<digits>`` (Marlin's ok_to_send with ADVANCED_OK)."""
    cdef Py_ssize_t i = 2, start
    cdef const char* letters = b"NPB"
    cdef int k
    if n < 2 or p[0] != 111 or p[1] != 107:
        return False
    for k in range(3):
        if i + 1 >= n or p[i] != 32 or p[i + 1] != <unsigned char>letters[k]:
            return False
        i += 2
        start = i
        while i < n and 48 <= p[i] <= 57:
            i += 1
        if i == start or i - start > 9:
            return False
    return i == n


cdef long long _int_after(const unsigned char* p, Py_ssize_t n, Py_ssize_t pos, bint* ok):
    cdef long long value = 0
    cdef Py_ssize_t i = pos, digits = 0
    while i < n and p[i] == 32:
        i += 1
    while i < n and 48 <= p[i] <= 57 and digits < 18:
        value = value * 10 + (p[i] - 48)
        i += 1
        digits += 1
    ok[0] = digits > 0
    return value


cdef class Sender:
    """Windowed sender of numbered lines with resend handling; no I/O, no clock.

    ``push``/``inject`` queue commands, :meth:`fill` returns the framed bytes the window
    allows now, :meth:`receive` takes whatever bytes the port produced and returns the
    events worth Python's attention (plain ``ok``s only move counters).  The window is
    bounded by ``max_commands`` lines and ``rx_buffer_bytes`` bytes in flight, so the
    firmware's receive buffer never overflows.
    """

    cdef public int max_commands
    cdef public int rx_buffer_bytes
    cdef public bint resend_has_ok
    cdef Py_ssize_t ring_size
    cdef list _frames
    cdef long long* _offsets
    cdef unsigned char* _long
    cdef long long next_number      # number the next new line gets
    cdef long long sent_upto        # highest number written since the last rewind
    cdef long long acked            # highest number known processed
    cdef long long _jump            # unconfirmed ADVANCED_OK N (a lost ok, or a garbled N)
    cdef long long _inflight_bytes
    cdef list _pending
    cdef Py_ssize_t _pending_pos
    cdef list _injected
    cdef bytearray _rx
    cdef bint _swallow_ok
    cdef long long _last_error_line  # 'Last Line: k' of the latest Error line, -1 if none
    cdef long long _last_resend
    #: lines counted as acknowledged because a refusal's 'Last Line' covered them, not by their own ok:
    #: the firmware accepted them, which is not to say it ran them (see maybe_running)
    cdef long long _inferred_from
    cdef long long _inferred_to
    cdef long long _oks_since_inferred
    #: the last line a refusal said the firmware accepted (>= acked while some of those still owe
    #: their oks: see _infer_to), -1 when nothing is known beyond ``acked``
    cdef long long _accepted_to
    #: the firmware answers a numbered M105 with ``ok T:...`` on one line (seen at least once): such an
    #: ok names its line, so lines a refusal left uncertain can be settled by sending one (a "marker")
    cdef public bint marker_seen
    cdef public long long markers_sent     # M105 markers injected to settle uncertain oks (a statistic)
    cdef public long long marker_settled   # oks found lost when a marker's ok came (a statistic)
    cdef long long _error_got        # 'got Y' of the latest 'expected line X got Y', -1 if none
    cdef bint _stale_error
    cdef public long long resends
    cdef public long long lines_acked
    cdef public long long job_lines_acked
    cdef public bint advanced_ok_seen
    cdef public int planner_free
    cdef public int queue_free
    cdef public bint probe_wanted
    cdef public long long replies
    cdef public long long bad_offset
    cdef public long long garbled_oks
    cdef public bint hold_job_lines  # a pause: fill() sends resends and host commands, no new job line
    # ADVANCED_OK: the firmware's command queue, learned from B (see _on_ok)
    cdef public bint use_reported_buffer   # let B grow the window (off for ping-pong)
    cdef public int line_cap               # never more lines in flight than this, whatever B says
    cdef public int firmware_bufsize       # largest B + 1 seen: a lower bound of BUFSIZE (0: none seen)
    cdef public int max_inflight           # most lines ever in flight at once (a statistic)
    cdef public int queue_free_min         # fewest free command slots any ok reported (-1: none)
    cdef int* _sizes                       # framed size of each line in the ring
    cdef long long _in_queue               # lines after `acked` known to sit in the firmware's queue
    cdef int _bufsize_said                 # B + 1 of the latest ok when it exceeded firmware_bufsize
    cdef long long _queue_bytes            # their framed bytes (not in the receive buffer any more)

    def __cinit__(self, int max_commands=4, int rx_buffer_bytes=128, Py_ssize_t ring_size=4096,
                  bint resend_has_ok=True):
        cdef Py_ssize_t size = 1
        while size < ring_size:
            size <<= 1
        self.ring_size = size
        self._offsets = <long long*>malloc(size * sizeof(long long))
        self._long = <unsigned char*>malloc(size)
        self._sizes = <int*>malloc(size * sizeof(int))
        if self._offsets == NULL or self._long == NULL or self._sizes == NULL:
            raise MemoryError()

    def __init__(self, int max_commands=4, int rx_buffer_bytes=128, Py_ssize_t ring_size=4096,
                 bint resend_has_ok=True):
        self.max_commands = max_commands
        self.rx_buffer_bytes = rx_buffer_bytes
        self.resend_has_ok = resend_has_ok
        self._frames = [None] * self.ring_size
        self._pending = []
        self._pending_pos = 0
        self._injected = []
        self._rx = bytearray()
        self.resends = self.lines_acked = self.job_lines_acked = self.replies = 0
        self.advanced_ok_seen = False
        self.planner_free = self.queue_free = -1
        self.bad_offset = -1
        self.garbled_oks = 0
        self.hold_job_lines = False
        self.use_reported_buffer = max_commands > 1
        self.line_cap = LINE_CAP
        self.firmware_bufsize = 0
        self.max_inflight = 0
        self.queue_free_min = -1
        self.marker_seen = False
        self.markers_sent = self.marker_settled = 0
        self.reset_numbering(0)

    def __dealloc__(self):
        free(self._offsets)
        free(self._long)
        free(self._sizes)

    def reset_numbering(self, long long last_number):
        """After ``M110 N<last_number>``: nothing in flight, the next line is last+1."""
        self.next_number = last_number + 1
        self.sent_upto = last_number
        self.acked = last_number
        self._jump = -1
        self._inflight_bytes = 0
        self._swallow_ok = False
        self._last_error_line = -1
        self._error_got = -1
        self._last_resend = -1
        self._inferred_from = -1
        self._inferred_to = -1
        self._oks_since_inferred = 0
        self._accepted_to = -1
        self._stale_error = False
        self.probe_wanted = False
        self._in_queue = 0
        self._queue_bytes = 0
        self._bufsize_said = 0

    # --- queueing ----------------------------------------------------------------------------
    def push(self, list batch):
        """Queue job lines: a list of ``(byte_offset, command)`` as LineSplitter returns them."""
        if self._pending_pos >= len(self._pending):
            self._pending = batch
            self._pending_pos = 0
        else:
            self._pending = self._pending[self._pending_pos:] + batch
            self._pending_pos = 0

    def inject(self, bytes command):
        """Queue a host command (poll, pause script...) ahead of the job's next lines."""
        self._injected.append(command)

    def drop_pending(self):
        """Forget queued job lines (cancel); returns how many were dropped."""
        cdef Py_ssize_t dropped = len(self._pending) - self._pending_pos
        self._pending = []
        self._pending_pos = 0
        return dropped

    @property
    def pending(self):
        """Commands queued but never sent (job lines and injected ones)."""
        return len(self._pending) - self._pending_pos + len(self._injected)

    @property
    def injected_pending(self):
        """Host commands queued but never sent."""
        return len(self._injected)

    @property
    def inflight(self):
        """Lines written whose processing is not yet known."""
        return self.next_number - 1 - self.acked

    @property
    def inflight_bytes(self):
        return self._inflight_bytes

    @property
    def last_acked(self):
        return self.acked

    @property
    def last_sent(self):
        return self.next_number - 1

    def offset_of(self, long long number):
        """File offset of a sent line (-1 for host commands), if still in the ring."""
        if number <= 0 or number >= self.next_number or self.next_number - number > self.ring_size:
            return None
        return self._offsets[number & (self.ring_size - 1)]

    def acked_job_offsets(self, int count):
        """Offsets of up to ``count`` most recent acknowledged job lines, newest first."""
        cdef list out = []
        cdef long long k = self.acked
        cdef long long off
        while k > 0 and len(out) < count and self.next_number - k <= self.ring_size:
            off = self._offsets[k & (self.ring_size - 1)]
            if off >= 0:
                out.append(off)
            k -= 1
        return out

    def acked_frames(self, Py_ssize_t count):
        """The last ``count`` acknowledged lines, oldest first (those the firmware may still be
        executing from its planner: for the motion bound; None where the ring holds none)."""
        cdef list out = []
        cdef long long k
        cdef long long first = max(1, self.acked - count + 1, self.next_number - self.ring_size)
        for k in range(first, self.acked + 1):
            out.append(self._frames[k & (self.ring_size - 1)])
        return out

    def unacked_commands(self):
        """Commands in flight (for timeouts: is a long one among them?)."""
        cdef list out = []
        cdef long long k
        for k in range(self.acked + 1, self.next_number):
            out.append(self._frames[k & (self.ring_size - 1)])
        return out

    def long_in_flight(self):
        cdef long long k
        for k in range(self.acked + 1, self.next_number):
            if self._long[k & (self.ring_size - 1)] & KIND_LONG:
                return True
        return False

    # --- sending -----------------------------------------------------------------------------
    cdef inline long long _window(self):
        """Lines allowed in flight: the configured queue; or, once ADVANCED_OK has revealed the
        firmware's own (B, see _on_free_slots), its command queue plus what fits in its receive
        buffer (the byte bound decides that part), at most ``line_cap``."""
        if self.use_reported_buffer and self.firmware_bufsize > 0:
            return max(self.line_cap, self.max_commands)
        return self.max_commands

    @property
    def window(self):
        """Lines the window allows in flight now (see :meth:`_window`)."""
        return self._window()

    @property
    def rx_bytes(self):
        """Bytes in flight that may still sit in the firmware's receive buffer (or on the wire)."""
        return self._inflight_bytes - self._queue_bytes

    cdef bint _fits(self, Py_ssize_t size):
        if self.sent_upto - self.acked >= self._window():
            return False
        # the receive buffer holds what is in flight minus the lines the firmware reported as moved
        # into its command queue; the first line after a drained window always goes
        return self._inflight_bytes - self._queue_bytes + size <= self.rx_buffer_bytes or self.sent_upto == self.acked

    cdef bytes _frame_new(self, bytes command, bytes framed, long long offset):
        """Put a line just framed as number ``next_number`` into the ring."""
        cdef long long number = self.next_number
        cdef Py_ssize_t slot = number & (self.ring_size - 1)
        self._frames[slot] = framed
        self._offsets[slot] = offset
        self._long[slot] = _kind(command)
        self._sizes[slot] = <int>len(framed)
        self.next_number += 1
        return framed

    def fill(self):
        """The bytes to write now: resends first, then injected commands, then job lines."""
        return self._fill()

    cdef bytes _fill(self):
        cdef list out = []
        cdef bytes framed, command
        cdef object item
        cdef long long window = self._window()
        while True:
            if self.sent_upto < self.next_number - 1:  # rewound: resend from the ring
                framed = self._frames[(self.sent_upto + 1) & (self.ring_size - 1)]
                if not self._fits(len(framed)):
                    break
            elif self._injected:
                if self.sent_upto - self.acked >= window:
                    break
                framed = frame(self.next_number, self._injected[0])
                if not self._fits(len(framed)):
                    break
                framed = self._frame_new(self._injected.pop(0), framed, -1)
            elif not self.hold_job_lines and self._pending_pos < len(self._pending):
                if self.sent_upto - self.acked >= window:
                    break
                item = self._pending[self._pending_pos]
                if item[1] is None:  # an overlong line: the caller refuses the job by its offset
                    self.bad_offset = item[0]
                    break
                command = item[1]
                framed = frame(self.next_number, command)
                if not self._fits(len(framed)):
                    break
                self._pending_pos += 1
                framed = self._frame_new(command, framed, item[0])
            else:
                break
            self.sent_upto += 1
            self._inflight_bytes += len(framed)
            out.append(framed)
        if not out:
            return b""
        if self.sent_upto - self.acked > self.max_inflight:
            self.max_inflight = self.sent_upto - self.acked
        if len(out) == 1:
            return out[0]
        return b"".join(out)

    def probe(self):
        """After a silence: the oldest unacknowledged line again (or b'').

        If it was processed and its ``ok`` lost, the firmware answers ``Resend: last+1``;
        if not, the copy is refused the same way after the original: either way the reply
        says exactly where the firmware stands.
        """
        self.probe_wanted = False
        if self.acked >= self.sent_upto:
            return b""
        return self._frames[(self.acked + 1) & (self.ring_size - 1)]

    # --- receiving ---------------------------------------------------------------------------
    cdef void _ack_to(self, long long number):
        cdef long long k
        cdef long long before = self.acked
        if number > self.sent_upto:
            number = self.sent_upto
        k = self.acked + 1
        while k <= number:
            self._inflight_bytes -= self._sizes[k & (self.ring_size - 1)]
            if self._offsets[k & (self.ring_size - 1)] >= 0:
                self.job_lines_acked += 1
            self.lines_acked += 1
            k += 1
        if number > self.acked:
            self.acked = number
        if self._inflight_bytes < 0 or self.acked == self.sent_upto:
            self._inflight_bytes = 0 if self.acked == self.sent_upto else max(self._inflight_bytes, 0)
        if self.acked > before and self._in_queue:
            # the acknowledged lines were the oldest of those known to be in the firmware's queue;
            # the others stay there until acknowledged in turn
            self._set_in_queue(self._in_queue - (self.acked - before))

    cdef void _set_in_queue(self, long long lines):
        """``lines`` after the acknowledged one are in the firmware's command queue (no longer in its RX)."""
        cdef long long k
        if lines > self.sent_upto - self.acked:
            lines = self.sent_upto - self.acked
        if lines < 0:
            lines = 0
        self._in_queue = lines
        self._queue_bytes = 0
        for k in range(self.acked + 1, self.acked + 1 + lines):
            self._queue_bytes += self._sizes[k & (self.ring_size - 1)]

    cdef void _on_ok(self, const unsigned char* p, Py_ssize_t n):
        cdef bint has_n = False, okp = False, in_order = False
        cdef long long number = -1, value, free_slots = -1
        cdef Py_ssize_t i
        cdef long long marker = -1
        if n > 4 and p[2] == 32 and p[3] == 84 and p[4] == 58:  # "ok T:": an M105's answer
            marker = self._oldest_m105_after(self.acked)
        if self._swallow_ok:  # the ok that closes an Error/Resend pair
            self._swallow_ok = False
            if marker < 0:
                return
            # that plain ok was lost: this one is the M105's own
        if self._inferred_from >= 0:
            self._oks_since_inferred += 1
            if self._inferred_from + self._oks_since_inferred > self._inferred_to:
                self._inferred_from = -1  # every line counted on a refusal's word has sent its own ok
        if marker > 0:
            # the oldest M105 in flight answered, so every line before it has been processed: oks
            # that never came for those (lost on the way back) are settled here
            self.marker_seen = True
            self.marker_settled += marker - self.acked - 1
            self._jump = -1
            self._ack_to(marker)
            return
        i = _find(p, n, b" N", 2, 2)
        if i >= 0:
            number = _int_after(p, n, i + 2, &has_n)
            self.advanced_ok_seen = True
            i = _find(p, n, b" P", 2, 2)
            if i >= 0:
                value = _int_after(p, n, i + 2, &okp)
                if okp:
                    self.planner_free = value
            i = _find(p, n, b" B", 2, 2)
            if i >= 0:
                value = _int_after(p, n, i + 2, &okp)
                if okp:
                    self.queue_free = value
                    free_slots = value
        if has_n and (number == self.acked + 1 or (self._jump >= 0 and number == self._jump + 1)) \
                and number <= self.sent_upto:
            in_order = number == self.acked + 1 and self._jump < 0
            self._jump = -1
            self._ack_to(number)
        else:
            if has_n and self.acked + 1 < number <= self.sent_upto:
                self._jump = number  # a lost ok, or a garbled digit: confirmed by the next ok
            elif has_n:
                self._jump = -1
            if self.acked < self.sent_upto:
                self._ack_to(self.acked + 1)
        if free_slots >= 0 and in_order and _is_advanced_ok(p, n):
            self._on_free_slots(free_slots)

    cdef void _on_free_slots(self, long long free_slots):
        """ADVANCED_OK's ``B``: Marlin's ``BUFSIZE - length`` while the acknowledged command still
        holds its slot, so ``B + 1`` is a lower bound of BUFSIZE (exact when nothing else was queued,
        as at the handshake) and ``BUFSIZE - B - 1`` lines after the acknowledged one had already left
        the receive buffer for the command queue.  A BUFSIZE learnt too small errs on the safe side
        (fewer lines counted as queued, more bytes counted as still in the receive buffer).

        Replies carry no checksum.  Only an ``ok`` of exactly Marlin's form that acknowledges the
        next line in order gets here (most garbled bytes break the form or the number), BUFSIZE grows
        only when two such oks in a row say it is larger (to the smaller of the two), and a B that
        would put more lines in the queue than are in flight is cut to those.  What remains is a digit
        garbled into another digit: the queue is then believed fuller than it is until the next ok,
        and the worst that follows is a receive buffer overrun that the firmware's checksum and
        line-number check turn into a resend (docs/resume.md, "Flow control")."""
        cdef long long said
        if free_slots >= 4096:
            return
        if free_slots + 1 > self.firmware_bufsize:
            if self._bufsize_said > self.firmware_bufsize:
                self.firmware_bufsize = <int>min(free_slots + 1, self._bufsize_said)
            self._bufsize_said = <int>(free_slots + 1)
        else:
            self._bufsize_said = 0
        if self.queue_free_min < 0 or free_slots < self.queue_free_min:
            self.queue_free_min = <int>free_slots
        if self.use_reported_buffer and self.firmware_bufsize > 0:
            self._set_in_queue(self.firmware_bufsize - free_slots - 1)

    cdef long long _oldest_m105_after(self, long long number):
        """The oldest M105 sent after line ``number`` (-1: none in flight)."""
        cdef long long k
        for k in range(max(number + 1, self.next_number - self.ring_size + 1), self.sent_upto + 1):
            if self._long[k & (self.ring_size - 1)] & KIND_M105:
                return k
        return -1

    cdef void _want_marker(self):
        """Settle uncertain oks: one M105 in flight after them (its ``ok T:`` names its line)."""
        if self._oldest_m105_after(self.acked) > 0 or b"M105" in self._injected:
            return
        self._injected.append(b"M105")
        self.markers_sent += 1

    cdef void _infer_to(self, long long last_line):
        """A refusal said the firmware accepted every line up to ``last_line`` (Marlin's ``Last Line``,
        OctoPrint's ``expected line`` - 1); which of those have sent their oks it does not say.

        Accepted is not processed: the newest of them may wait in the firmware's command queue behind
        a long command (on real Marlin, ``G28`` and ``G1`` queued behind an 8-minute ``M190``) and
        send their oks later, while older ones may have had their oks lost on the way back.  The
        queue holds at most BUFSIZE - 1 commands when the firmware reads a line, so at most that many
        can still owe an ok: those stay unacknowledged (in the queue, out of the receive buffer) and
        the next oks are theirs, in order; the older ones are counted now.  Holding a line whose ok
        was in fact lost would stall the window, so where the firmware answers M105 with ``ok T:``
        (marker_seen) an M105 goes after them and its answer settles the count (_on_ok).  Without
        that the lines are all counted now, as before, and remembered until as many oks have come as
        there were lines, so the liveness bound can still see them (maybe_running)."""
        cdef long long owed, held = 0
        if last_line > self.sent_upto:
            last_line = self.sent_upto
        if last_line > self._accepted_to:
            self._accepted_to = last_line
        owed = last_line - self.acked
        if owed <= 0:
            return
        if self.marker_seen:
            held = min(owed, max(self.max_commands, self.firmware_bufsize) - 1)
        if last_line - held > self.acked:
            if self._inferred_from < 0 or self._oks_since_inferred > 0:
                self._inferred_from = self.acked + 1
                self._oks_since_inferred = 0
            self._inferred_to = last_line - held
            self._ack_to(last_line - held)
        if held > 0:
            self._set_in_queue(held)
            self._want_marker()

    def maybe_running(self):
        """The commands counted as acknowledged on a refusal's word whose own oks have not come yet,
        oldest first: the firmware may still be running them (for the liveness bound)."""
        cdef list out = []
        cdef long long k
        if self._inferred_from < 0:
            return out
        for k in range(max(self._inferred_from + self._oks_since_inferred, self.next_number - self.ring_size + 1),
                       self._inferred_to + 1):
            out.append(self._frames[k & (self.ring_size - 1)])
        return out

    cdef void _unack_to(self, long long number):
        """The firmware says it has only processed up to ``number``: take back the acks counted above it."""
        cdef long long k = self.acked
        while k > number and k > 0 and self.next_number - k <= self.ring_size:
            self.lines_acked -= 1
            if self._offsets[k & (self.ring_size - 1)] >= 0:
                self.job_lines_acked -= 1
            k -= 1
        self.acked = number
        self._accepted_to = -1
        self._in_queue = 0
        self._queue_bytes = 0

    cdef void _on_error(self, const unsigned char* p, Py_ssize_t n):
        """Where a non-fatal error says the firmware stands, for the ``Resend`` that follows it.

        Marlin and Prusa: ``Error:<what>, Last Line: k`` (k = the last line it processed); OctoPrint's
        Virtual Printer and Repetier: ``Error: expected line X got Y`` (X = the line it wants).  A line
        number refusal (``Line Number is not Last Line Number+1``, ``expected line``) may be the echo of
        a line sent before a rewind (see _on_resend).  Anything else confirms nothing.
        """
        cdef bint okn = False
        cdef long long value
        cdef Py_ssize_t j = _find(p, n, b"Last Line:", 10, 0)
        self._last_error_line = -1
        self._stale_error = False
        self._error_got = -1
        if j >= 0:
            value = _int_after(p, n, j + 10, &okn)
            self._last_error_line = value if okn else -1
            self._stale_error = _contains_ci(p, n, b"line number is not")
            return
        self._error_got = -1
        j = _find(p, n, b"expected line", 13, 0)
        if j >= 0:
            value = _int_after(p, n, j + 13, &okn)
            self._last_error_line = value - 1 if okn and value > 0 else -1
            self._stale_error = True
            j = _find(p, n, b" got", 4, j + 13)
            if j >= 0:
                value = _int_after(p, n, j + 4, &okn)
                self._error_got = value if okn else -1

    cdef void _on_skip(self, const unsigned char* p, Py_ssize_t n):
        """``skip N`` (Repetier): line N was already there, its ok follows.  It confirms N was processed."""
        cdef bint okn = False
        cdef long long number = _int_after(p, n, 5, &okn)
        if self.resend_has_ok:
            self._swallow_ok = True
        if okn and self.acked < number <= self.sent_upto:
            self._ack_to(number)

    cdef object _on_resend(self, const unsigned char* p, Py_ssize_t n, Py_ssize_t digits_at):
        """``Resend: N`` / ``rs N``: rewind so that everything from the right line goes again, in order.

        Confirmed (the error before it said where the firmware stands: Marlin's and Prusa's ``Last Line:
        N-1``, OctoPrint's and Repetier's ``expected line N``): acknowledgements are set to N-1 and the
        lines from N go again.  Not confirmed (``Checksum mismatch`` without a number, ``rs N`` alone, or
        numbers that disagree: a garbled byte on the way back): nothing is acknowledged and everything
        from the oldest unacknowledged line goes again; that works as a probe, since the firmware
        refuses a line it already has with a confirmed error.  That error is believed even when it names
        a line past the ones sent again (the firmware accepted those before the rewind): the host goes on
        from there; dismissing it wedged the print, every probe answered alike.  A numbering refusal of a
        line sent before the latest rewind asks for the line already being resent: it is served once.
        """
        cdef bint okn = False, forward = False
        cdef long long number, target
        cdef Py_ssize_t i = digits_at
        while i < n and (p[i] == 32 or p[i] == 78 or p[i] == 58):  # ' ', 'N', ':'
            i += 1
        number = _int_after(p, n, i, &okn)
        if self.resend_has_ok:
            self._swallow_ok = True  # the ok after a resend request answers the refused line
        error_line = self._last_error_line
        stale = self._stale_error
        got = self._error_got
        self._last_error_line = -1
        self._stale_error = False
        self._error_got = -1
        if not okn or number < 1 or self.next_number - number > self.ring_size:
            number = self.acked + 1  # unreadable: everything from the oldest unacknowledged line
            error_line = -1
        if number > self.sent_upto + 1:
            if error_line == number - 1 and number <= self.next_number:
                # confirmed, and beyond our rewind: an unconfirmed resend rewound us behind the
                # firmware, and this refuses a line sent again since (a probe's answer). The lines
                # up to number - 1 were accepted when first sent: they do not go again
                self.sent_upto = number - 1
                forward = True
            else:
                number = self.acked + 1
                error_line = -1
        if error_line == number - 1:
            if 0 < got < number and number - 1 >= self.acked and not forward:
                # a copy of a line it already has (a probe, a resend that crossed the original): the
                # firmware lost nothing, and what was sent after that copy is still coming, in order
                if number - 1 > self.acked:
                    self._infer_to(number - 1)
                self._jump = -1
                return None
            if number - 1 < self.acked:
                if self.acked - (number - 1) > self._window() + 2:
                    # far more than a miscounted window: not a lost ok but a renumbered firmware
                    self.probe_wanted = True
                    return None
                self._unack_to(number - 1)  # an ok was counted that the firmware never sent for us
            elif number - 1 > self.acked:
                self._infer_to(number - 1)
            target = number
        elif number <= self.acked + 1 and self.acked - (number - 1) <= self._window() + 2:
            if number - 1 < self.acked:
                self._unack_to(number - 1)
            target = number
        else:
            target = self.acked + 1  # never skip a line on an unconfirmed number
        self._jump = -1
        if self.sent_upto < target and not forward:
            return None  # already rewound to here: a line sent before the rewind, refused again
        if stale and target == self._last_resend and max(self.acked, self._accepted_to) == target - 1 \
                and self.sent_upto >= target:
            # a line sent before our rewind arrived after it and was refused for its number:
            # the resent lines are behind it on the wire; rewinding again would only repeat them
            return None
        self._last_resend = target
        self.resends += 1
        self.sent_upto = target - 1
        self._inflight_bytes = 0
        self._in_queue = 0
        self._queue_bytes = 0
        if self.acked < target - 1:  # accepted lines that still owe their oks (_infer_to): in the queue
            self._set_in_queue(target - 1 - self.acked)
            self._inflight_bytes = self._queue_bytes
        return target

    def receive(self, bytes chunk):
        """Feed bytes read from the port; returns a list of ``(kind, line, value)`` events."""
        return self._receive(chunk)

    cdef list _receive(self, bytes chunk):
        cdef list events = []
        cdef bytearray rx = self._rx
        cdef const unsigned char* p
        cdef Py_ssize_t start = 0, end, n, nl, m, i, j
        cdef bytes data
        cdef bint okn
        cdef long long value
        cdef int k
        if rx:
            rx += chunk
            data = bytes(rx)
            rx.clear()
        else:
            data = chunk
        p = data
        n = len(data)
        while start < n:
            hit = memchr(p + start, 10, n - start)
            if hit == NULL:
                rx += data[start:]
                break
            nl = <Py_ssize_t>(<const unsigned char*>hit - p)
            end = nl
            while end > start and (p[end - 1] == 13 or p[end - 1] == 32 or p[end - 1] == 0):
                end -= 1
            i = start
            while i < end and (p[i] == 32 or p[i] == 0):
                i += 1
            m = end - i
            self.replies += 1
            if m >= 2 and p[i] == 111 and p[i + 1] == 107:  # "ok"
                self._on_ok(p + i, m)
                if m > 4 and p[i + 3] == 84 and p[i + 4] == 58:  # "ok T:...": an M105's answer
                    value_t = parse_temperatures(data[i:end])
                    if value_t is not None:
                        events.append((EV_TEMPERATURE, data[i:end], value_t))
            elif (m == 2 or (m > 6 and p[i + 2] == 32 and _find(p + i, m, b" P", 2, 2) >= 0
                             and _find(p + i, m, b" B", 2, 2) >= 0)) and (p[i] == 111 or p[i + 1] == 107):
                # an "ok" with one garbled byte (no other reply looks like it); should it be a
                # misreading, the firmware's line-number check exposes the gap at the next line
                self.garbled_oks += 1
                self._on_ok(p + i, m)
                if m > 4 and _find(p + i, m, b"T:", 2, 2) >= 0:
                    events.append((EV_TEMPERATURE, data[i:end], parse_temperatures(data[i:end])))
            elif _starts(p + i, m, b"Resend:", 7) or _starts(p + i, m, b"rs ", 3):
                events.append((EV_RESEND, data[i:end], self._on_resend(p + i, m, 7 if p[i] == 82 else 3)))
            elif _starts(p + i, m, b"Error:", 6) or _starts(p + i, m, b"!!", 2):
                for k in range(7):
                    if _contains_ci(p + i, m, _FATAL[k]):
                        events.append((EV_FATAL, data[i:end], None))
                        break
                else:
                    if p[i] == 33:
                        events.append((EV_FATAL, data[i:end], None))
                    else:
                        self._on_error(p + i, m)
                        events.append((EV_ERROR, data[i:end], None))
            elif _starts(p + i, m, b"skip ", 5):
                self._on_skip(p + i, m)
                events.append((EV_OTHER, data[i:end], None))
            elif _starts(p + i, m, b"echo:busy", 9) or _starts(p + i, m, b"busy:", 5):
                events.append((EV_BUSY, data[i:end], None))
            elif m == 4 and memcmp(p + i, b"wait", 4) == 0:
                events.append((EV_WAIT, data[i:end], None))
            elif m == 5 and memcmp(p + i, b"start", 5) == 0:
                # the firmware rebooted: what follows answers a printer that forgot everything
                # (its line number is 0); nothing after it may move the counters
                events.append((EV_START, data[i:end], None))
                break
            elif _starts(p + i, m, b"//action:", 9):
                events.append((EV_ACTION, data[i:end], data[i + 9:end].strip().split(b" ", 1)[0]))
            elif _starts(p + i, m, b"Cap:", 4):
                events.append((EV_CAPABILITY, data[i:end], None))
            elif _starts(p + i, m, b"FIRMWARE_NAME:", 14):
                events.append((EV_FIRMWARE, data[i:end], None))
            elif m > 0:
                if _find(p + i, m, b"T:", 2, 0) >= 0:
                    value_t = parse_temperatures(data[i:end])
                    if value_t is not None:
                        events.append((EV_TEMPERATURE, data[i:end], value_t))
                        start = nl + 1
                        continue
                events.append((EV_OTHER, data[i:end], None))
            start = nl + 1
        return events

# ---------------------------------------------------------------------------------------------
# The pump: the streaming loop's inner part on the port's file descriptor.
#
# At an instant firmware the printer answers each line on its own and the host wakes once per
# reply; with a Python loop around each wake-up the interpreter, not the link, was most of the CPU
# per line.  The pump keeps the whole cycle (write what the window allows, block in read() for the
# replies, feed them to the Sender) in C and returns to Python only when something needs it:
# replies other than plain ``ok`` (events), a resend that needs a probe, the job's queued lines
# running low, a silence, the window drained, or ``slice_s`` of real time (so that pause, cancel,
# progress and checkpoints are looked at several times a second).  The GIL is released around every
# system call, so the daemon's other threads run meanwhile.
# ---------------------------------------------------------------------------------------------
from posix.unistd cimport read as _c_read, write as _c_write
from posix.time cimport clock_gettime, nanosleep, timespec, CLOCK_MONOTONIC
from libc.errno cimport errno, EINTR, EAGAIN

PUMP_IDLE = 0      # nothing in flight and nothing the window may send (all sent, or an overlong line)
PUMP_EVENTS = 1    # replies for Python (temperatures, resend, errors, busy, actions, start...)
PUMP_PROBE = 2     # the Sender wants a probe after a settle time (an unconfirmed resend)
PUMP_REFILL = 3    # fewer than ``min_pending`` job lines queued: read more of the file
PUMP_SLICE = 4     # ``slice_s`` passed: time for Python's periodic work
PUMP_SILENT = 5    # a read timed out with nothing (the termios VTIME of the streaming mode)

DEF PUMP_BUFFER = 65536
DEF FAST_SPAN = 16

#: acknowledged lines closer than this on average are "fast": 5000 lines/s, beyond any serial link
#: below ~1.5 Mbaud (33-byte lines, 10 bits a byte); a planner-paced or link-paced firmware is slower
FAST_LINE_S = 200e-6


cdef inline double _monotonic() noexcept nogil:
    """Seconds on CLOCK_MONOTONIC: the clock of Python's time.monotonic()."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef class Pump:
    """Drives a :class:`Sender` over a blocking file descriptor (the port in streaming mode).

    When to refill the window adapts to how fast the firmware answers.  Slow replies (a link or a
    planner that paces the lines: a few per millisecond at most) refill as soon as the receive buffer
    is down to ``slow_low_water`` bytes, so the wire never idles.  Fast replies (lines acknowledged
    less than ``fast_line_s`` apart on average over the last ``FAST_SPAN`` lines: no serial link below
    ~1.5 Mbaud can carry that) wait until only ``fast_low_water`` bytes are left: one write carries
    most of a window, and the replies have more time to arrive together.  The firmware idles at most
    for one host round trip per window then, a few percent of a rate that fast.

    ``nap_s`` (``printer.coalesce_s``): sleep that long before each read while two or more lines are
    in flight; 0 = never (a timer wake-up costs about as much as the read it saves).

    Counters (``reads``, ``writes``, ``naps``, ``fast_refills``) are for benchmarks and tests: CPU per
    line is mostly system calls per line.
    """

    cdef Sender sender
    cdef int fd
    cdef char* _buffer
    cdef Py_ssize_t slow_low_water
    cdef Py_ssize_t fast_low_water
    cdef double fast_line_s
    cdef double nap_s
    cdef bint _fast
    cdef double _mark_t
    cdef long long _mark_acked
    cdef public long long reads
    cdef public long long writes
    cdef public long long naps
    cdef public long long fast_refills
    cdef public double last_rx

    def __cinit__(self, *args, **kwargs):
        self._buffer = <char*>malloc(PUMP_BUFFER)
        if self._buffer == NULL:
            raise MemoryError()

    def __init__(self, Sender sender, int fd, Py_ssize_t slow_low_water, Py_ssize_t fast_low_water,
                 double fast_line_s=FAST_LINE_S, double nap_s=0.0):
        self.sender = sender
        self.fd = fd
        self.slow_low_water = slow_low_water
        self.fast_low_water = fast_low_water
        self.fast_line_s = fast_line_s
        self.nap_s = nap_s
        self._fast = False
        self._mark_t = _monotonic()
        self._mark_acked = sender.lines_acked
        self.reads = self.writes = self.naps = self.fast_refills = 0
        self.last_rx = 0.0

    def __dealloc__(self):
        free(self._buffer)

    @property
    def fast(self):
        """The firmware answers faster than any serial link could pace it (see the class docstring)."""
        return self._fast

    cdef void _write_all(self, bytes data) except *:
        cdef const char* p = data
        cdef Py_ssize_t left = len(data)
        cdef Py_ssize_t n
        cdef int err = 0
        while left > 0:
            with nogil:
                n = _c_write(self.fd, p, left)
                if n < 0:
                    err = errno
            if n < 0:
                if err == EINTR:
                    continue
                raise OSError(err, "write to the printer port failed")
            p += n
            left -= n
        self.writes += 1

    cdef inline void _pace(self, double now):
        """Every FAST_SPAN acknowledged lines: fast or slow replies?"""
        cdef long long acked = self.sender.lines_acked - self._mark_acked
        if acked >= FAST_SPAN:
            self._fast = now - self._mark_t < acked * self.fast_line_s
            self._mark_t = now
            self._mark_acked = self.sender.lines_acked
        elif acked < 0:  # the Sender took acknowledgements back (a resend): start over
            self._mark_t = now
            self._mark_acked = self.sender.lines_acked

    def run(self, double slice_s, Py_ssize_t min_pending):
        """Stream until something needs Python; returns ``(status, events or None)``."""
        cdef Sender s = self.sender
        cdef double now = _monotonic()
        cdef double deadline = now + slice_s
        cdef bytes out
        cdef list events
        cdef Py_ssize_t n
        cdef int err = 0
        cdef timespec nap
        if now - self._mark_t > 1.0:  # after a pause or a long command: measure afresh
            self._mark_t = now
            self._mark_acked = s.lines_acked
            self._fast = False
        while True:
            if s.sent_upto == s.acked or s._inflight_bytes - s._queue_bytes <= \
                    (self.fast_low_water if self._fast else self.slow_low_water):
                out = s._fill()
                if out:
                    self._write_all(out)
                    if self._fast:
                        self.fast_refills += 1
            if s.sent_upto == s.acked:
                return (PUMP_IDLE, None)
            if len(s._pending) - s._pending_pos < min_pending:
                return (PUMP_REFILL, None)
            if self.nap_s > 0 and s.sent_upto - s.acked > 1:
                nap.tv_sec = <long>self.nap_s
                nap.tv_nsec = <long>((self.nap_s - nap.tv_sec) * 1e9)
                with nogil:
                    nanosleep(&nap, NULL)
                self.naps += 1
            with nogil:
                n = _c_read(self.fd, self._buffer, PUMP_BUFFER)
                if n < 0:
                    err = errno
            if n < 0:
                if err == EINTR:
                    continue
                if err == EAGAIN:  # a non-blocking descriptor: nothing there, as after a timeout
                    return (PUMP_SILENT, None)
                raise OSError(err, "read from the printer port failed")
            if n == 0:
                return (PUMP_SILENT, None)
            self.reads += 1
            now = _monotonic()
            self.last_rx = now
            events = s._receive(PyBytes_FromStringAndSize(self._buffer, n))
            self._pace(now)
            if events:
                return (PUMP_EVENTS, events)
            if s.probe_wanted:
                return (PUMP_PROBE, None)
            if now >= deadline:
                return (PUMP_SLICE, None)


# ---------------------------------------------------------------------------------------------
# Resume replay: the machine state at a file offset (node/printer/resume.py), natively.
#
# The same rules as resume.apply (the Python reference the tests compare against, line by line):
# the head is the cleaned command up to its first space, upper-cased; the words are its
# whitespace-separated tokens after the first, the letter upper-cased, the rest read as Python's
# float() reads it (an empty rest is 0, an unreadable or non-finite one is skipped, the last
# readable one of a letter wins).  Lines longer than max_line_bytes are skipped as LineSplitter
# reports them; a layer is a line starting with ";LAYER_CHANGE" or ";LAYER:".
# ---------------------------------------------------------------------------------------------
from cpython.object cimport PyObject
from libc.math cimport isfinite

cdef extern from "Python.h":
    # the parser behind float(): same digits, same double
    double PyOS_string_to_double(const char* s, char** endptr, PyObject* overflow_exception) except? -1.0

DEF W_X = 0
DEF W_Y = 1
DEF W_Z = 2
DEF W_E = 3
DEF W_F = 4
DEF W_S = 5
DEF W_R = 6
DEF N_WORDS = 7

cdef inline bint _space(unsigned char c) noexcept:
    """bytes.split()'s whitespace."""
    return c == 32 or c == 9 or c == 10 or c == 13 or c == 11 or c == 12


cdef int _word_index(unsigned char c) noexcept:
    if 97 <= c <= 122:
        c -= 32
    if c == 88:
        return W_X
    if c == 89:
        return W_Y
    if c == 90:
        return W_Z
    if c == 69:
        return W_E
    if c == 70:
        return W_F
    if c == 83:
        return W_S
    if c == 82:
        return W_R
    return -1


cdef bint _read_float(const unsigned char* p, Py_ssize_t n, double* out) except -1:
    """``float(p[:n])`` as Python reads it; False if Python would refuse it or it is not finite."""
    cdef char buf[64]
    cdef double value
    cdef object parsed
    if n == 0:
        out[0] = 0.0
        return True
    if n < 64 and memchr(p, 0, n) == NULL and memchr(p, 95, n) == NULL:  # no NUL, no '_'
        memcpy(buf, p, n)
        buf[n] = 0
        try:
            value = PyOS_string_to_double(buf, NULL, NULL)
        except ValueError:
            return False
    else:  # long, or with the underscores float() accepts: let Python decide
        try:
            parsed = float(PyBytes_FromStringAndSize(<const char*>p, n))
        except ValueError:
            return False
        value = parsed
    if not isfinite(value):
        return False
    out[0] = value
    return True


cdef class ModalScan:
    """Feeds on a job file's bytes; holds the modal state after every complete line seen.

    A line not yet ended by a newline is kept pending and never applied: the state is the one just
    before the line that starts where the bytes stop.
    """

    cdef public bint absolute_xyz
    cdef public bint absolute_e
    cdef public double x, y, z, e
    cdef public double feedrate_mm_min
    cdef public double hotend_c, bed_c
    cdef public long long fan_pwm, tool, layer
    cdef Py_ssize_t max_line_bytes
    cdef bytearray _pending
    cdef bint _overlong
    cdef bint _pending_marker

    def __init__(self, Py_ssize_t max_line_bytes=4096):
        self.absolute_xyz = self.absolute_e = True
        self.x = self.y = self.z = self.e = 0.0
        self.feedrate_mm_min = 1500.0
        self.hotend_c = self.bed_c = 0.0
        self.fan_pwm = self.tool = self.layer = 0
        self.max_line_bytes = max_line_bytes
        self._pending = bytearray()
        self._overlong = False
        self._pending_marker = False

    def state(self):
        """The fields of resume.ModalState."""
        return {"absolute_xyz": self.absolute_xyz, "absolute_e": self.absolute_e, "x": self.x, "y": self.y,
                "z": self.z, "e": self.e, "feedrate_mm_min": self.feedrate_mm_min, "hotend_c": self.hotend_c,
                "bed_c": self.bed_c, "fan_pwm": self.fan_pwm, "tool": self.tool, "layer": self.layer}

    def feed(self, bytes chunk):
        cdef const unsigned char* p = chunk
        cdef Py_ssize_t n = len(chunk), pos = 0, nl
        cdef const void* hit
        cdef bytes line
        while pos < n:
            hit = memchr(p + pos, 10, n - pos)
            if hit == NULL:
                self._hold(chunk, pos, n)
                return
            nl = <Py_ssize_t>(<const unsigned char*>hit - p)
            if self._pending or self._overlong:
                self._hold(chunk, pos, nl)
                if self._overlong:
                    if self._pending_marker:
                        self.layer += 1
                else:
                    line = bytes(self._pending)
                    self._line(line, len(line))
                self._pending = bytearray()
                self._overlong = False
                self._pending_marker = False
            else:
                self._line(p + pos, nl - pos)
            pos = nl + 1

    cdef void _hold(self, bytes chunk, Py_ssize_t start, Py_ssize_t end) except *:
        """Keep an unfinished line (or only whether it is a layer marker, once it is too long)."""
        if self._overlong:
            return
        self._pending += chunk[start:end]
        if len(self._pending) > self.max_line_bytes:
            self._pending_marker = _is_layer_marker(self._pending, len(self._pending))
            self._overlong = True
            self._pending = bytearray()

    cdef int _line(self, const unsigned char* p, Py_ssize_t n) except -1:
        cdef Py_ssize_t start = 0, end, i, k, tok
        cdef const void* semi
        cdef unsigned char h0
        cdef long long number, digits
        cdef double words[N_WORDS]
        cdef bint have[N_WORDS]
        cdef double value
        cdef int w
        if _is_layer_marker(p, n):
            self.layer += 1
        if n > self.max_line_bytes:
            return 0
        semi = memchr(p, 59, n)
        end = n if semi == NULL else <Py_ssize_t>(<const unsigned char*>semi - p)
        while start < end and (p[start] == 32 or p[start] == 9 or p[start] == 13 or p[start] == 10):
            start += 1
        while end > start and (p[end - 1] == 32 or p[end - 1] == 9 or p[end - 1] == 13 or p[end - 1] == 10):
            end -= 1
        if end == start:
            return 0
        p += start
        n = end - start
        # the head: up to the first space
        k = 0
        while k < n and p[k] != 32:
            k += 1
        h0 = p[0] - 32 if 97 <= p[0] <= 122 else p[0]
        if h0 == 84:  # 'T' and digits only: a tool change
            if k < 2:
                return 0
            number = 0
            for i in range(1, k):
                if not 48 <= p[i] <= 57:
                    return 0
                number = number * 10 + (p[i] - 48)
                if number > 255:
                    return 0
            self.tool = number
            return 0
        if h0 != 71 and h0 != 77:  # 'G' 'M'
            return 0
        if k < 2 or k > 4:
            return 0
        number = 0
        for i in range(1, k):
            if not 48 <= p[i] <= 57:
                return 0
            number = number * 10 + (p[i] - 48)
        digits = k - 1
        if digits > 1 and p[1] == 48:  # "G01": not the reference's "G1"
            return 0
        if h0 == 71:
            if number == 90:
                self.absolute_xyz = self.absolute_e = True
                return 0
            if number == 91:
                self.absolute_xyz = self.absolute_e = False
                return 0
            if number == 28:
                self._home(p, n)
                return 0
            if number > 3 and number != 92:
                return 0
        else:
            if number == 82:
                self.absolute_e = True
                return 0
            if number == 83:
                self.absolute_e = False
                return 0
            if number == 107:
                self.fan_pwm = 0
                return 0
            if number != 104 and number != 109 and number != 140 and number != 190 and number != 106:
                return 0
        # the words, after the first whitespace-separated token
        for w in range(N_WORDS):
            have[w] = False
        i = 0
        while i < n and not _space(p[i]):
            i += 1
        while i < n:
            while i < n and _space(p[i]):
                i += 1
            if i >= n:
                break
            tok = i
            while i < n and not _space(p[i]):
                i += 1
            w = _word_index(p[tok])
            if w >= 0 and _read_float(p + tok + 1, i - tok - 1, &value):
                words[w] = value
                have[w] = True
        if h0 == 71 and number <= 3:
            if have[W_X]:
                self.x = words[W_X] if self.absolute_xyz else self.x + words[W_X]
            if have[W_Y]:
                self.y = words[W_Y] if self.absolute_xyz else self.y + words[W_Y]
            if have[W_Z]:
                self.z = words[W_Z] if self.absolute_xyz else self.z + words[W_Z]
            if have[W_E]:
                self.e = words[W_E] if self.absolute_e else self.e + words[W_E]
            if have[W_F] and words[W_F] > 0:
                self.feedrate_mm_min = words[W_F]
        elif h0 == 71:  # G92
            if have[W_X]:
                self.x = words[W_X]
            if have[W_Y]:
                self.y = words[W_Y]
            if have[W_Z]:
                self.z = words[W_Z]
            if have[W_E]:
                self.e = words[W_E]
        elif number == 104 or number == 109:
            if have[W_S]:
                self.hotend_c = words[W_S]
            elif have[W_R]:
                self.hotend_c = words[W_R]
        elif number == 140 or number == 190:
            if have[W_S]:
                self.bed_c = words[W_S]
            elif have[W_R]:
                self.bed_c = words[W_R]
        else:  # M106
            value = words[W_S] if have[W_S] else 255.0
            self.fan_pwm = <long long>(255.0 if value > 255.0 else (0.0 if value < 0.0 else value))
        return 0

    cdef void _home(self, const unsigned char* p, Py_ssize_t n):
        """G28: the axes named (" X" anywhere, upper-cased), or all three."""
        cdef bint named[3]
        cdef Py_ssize_t i
        cdef unsigned char c
        named[0] = named[1] = named[2] = False
        for i in range(n - 1):
            if p[i] == 32:
                c = p[i + 1] - 32 if 97 <= p[i + 1] <= 122 else p[i + 1]
                if 88 <= c <= 90:
                    named[c - 88] = True
        if not (named[0] or named[1] or named[2]):
            named[0] = named[1] = named[2] = True
        if named[0]:
            self.x = 0.0
        if named[1]:
            self.y = 0.0
        if named[2]:
            self.z = 0.0


cdef bint _is_layer_marker(const unsigned char* p, Py_ssize_t n) noexcept:
    return (n >= 13 and memcmp(p, b";LAYER_CHANGE", 13) == 0) or (n >= 7 and memcmp(p, b";LAYER:", 7) == 0)
