# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The analysis core: streaming G-code parser, firmware-like motion planner, event timeline.

Python feeds whole chunks of a file (``Analyzer.feed``) and calls ``finish`` once;
nothing here is called per line from Python, and memory stays flat: only the
look-ahead buffer (``lookahead_blocks`` moves), one partial line and the sparse
event list (temperature/fan/stepper changes, layer starts) are kept.

The planner follows what Marlin's ``planner.cpp`` does (and what Prusa firmware,
which derives from Marlin 1.x, does):

* every move is a block with a trapezoidal speed profile (constant acceleration,
  cruise, constant deceleration);
* the feedrate is scaled down so no axis exceeds its M203 limit, the acceleration
  so no axis exceeds its M201 limit (P/T/R of M204 pick print, travel or retract
  acceleration, Marlin 2 semantics: ``M204 S`` sets print and travel; the legacy
  ``M204 S<print> T<retract>`` form of Marlin 1.x and Prusa MK3 firmware is read as such);
* junction speeds come from classic jerk (M205 X/Y/Z/E, Marlin's
  ``max_jerk``/"safe speed" computation) or from junction deviation (M205 J,
  Marlin 2 ``junction_deviation_mm`` with its small-segment arc limit);
* look-ahead: a reverse pass (each block must be able to decelerate to the
  next block's entry, the newest block to a stop) and a forward pass (each
  block can only accelerate so much over its length), over the last
  ``lookahead_blocks`` moves -- the firmware's planner buffer; a block's
  profile is fixed when it leaves the buffer, as in the firmware;
* G4, M400, M109, M190, M0/M1, M600 empty the buffer (the firmware
  synchronises), so the machine decelerates to a stop there;
* G2/G3 arcs are split into segments of at most 1 mm (Marlin's
  ``MAX_ARC_SEGMENT_MM``), each a planner block.

References: Marlin ``src/module/planner.cpp`` (``_populate_block``,
``reverse_pass_kernel``, ``forward_pass_kernel``, ``calculate_trapezoid_for_block``),
``src/gcode/motion/G2_G3.cpp``; S. Jeon, "Improving Grbl: cornering algorithm"
(junction deviation).
"""
cimport cython

cdef extern from *:
    """
    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC optimize ("O3", "no-math-errno")
    #endif
    """
from libc.math cimport sqrt, fabs, atan2, cos, sin, floor, acos, M_PI
from libc.stdlib cimport malloc, free
from libc.string cimport memchr, memcpy

cdef enum:
    AX_X = 0
    AX_Y = 1
    AX_Z = 2
    AX_E = 3
    MAX_TOOLS = 16
    MAX_ARC_SEGMENTS = 512   # ~0.5 m of arc at 1 mm; longer arcs get longer segments

# event kinds (public: node.gcode.analysis reads them)
EV_HOTEND_TARGET = 1   # a=tool, b=target C
EV_HOTEND_WAIT = 2     # a=tool, b=target C, c=1 if it also waits while cooling (M109 R)
EV_BED_TARGET = 3      # b=target C
EV_BED_WAIT = 4        # b=target C, c=1 if it also waits while cooling (M190 R)
EV_FAN = 5             # b=part fan 0..1
EV_STEPPERS = 6        # b=1 on, 0 off
EV_LAYER = 7           # a=byte offset, b=z mm
EV_PAUSE = 8           # a=byte offset (M0/M1/M600: waits for a person, time unknown)
EV_TOOL = 9            # a=tool

cdef double MIN_PLANNER_SPEED = 0.05   # mm/s, Marlin MINIMUM_PLANNER_SPEED
# a parameter with 8 or more integer digits (>= 1e7) is absurd: its line is refused
cdef double MAX_ARC_SEGMENT_MM = 1.0
cdef double MIN_ARC_SEGMENT_MM = 0.1
cdef double EPS_MM = 1.0e-9

cdef enum:
    CC_OTHER = 0
    CC_SPACE = 1    # space, tab, CR
    CC_STOP = 2     # ';' comment, '*' checksum, '\\n' end of line
    CC_LETTER = 3
    CC_DIGIT = 4

cdef unsigned char[256] CHAR_CLASS
cdef int _cc
for _cc in range(256):
    CHAR_CLASS[_cc] = CC_OTHER
CHAR_CLASS[32] = CHAR_CLASS[9] = CHAR_CLASS[13] = CC_SPACE
CHAR_CLASS[59] = CHAR_CLASS[42] = CHAR_CLASS[10] = CC_STOP
for _cc in range(65, 91):
    CHAR_CLASS[_cc] = CC_LETTER
    CHAR_CLASS[_cc + 32] = CC_LETTER
for _cc in range(48, 58):
    CHAR_CLASS[_cc] = CC_DIGIT

cdef double[19] POW10 = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
                         1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18]


cdef struct Block:
    double distance     # mm along the path (|E| for extruder-only moves)
    double nominal      # mm/s cruise speed after axis limits
    double accel        # mm/s^2 along the path
    double max_entry    # mm/s, junction limit with the previous block
    double entry        # mm/s, planned entry speed
    bint nominal_length # nominal speed reachable from a stop within the block


cdef inline double max_allowable(double accel, double target, double distance) noexcept nogil:
    """Highest speed from which ``target`` can still be reached over ``distance``."""
    return sqrt(target * target + 2.0 * accel * distance)


cdef double trapezoid_s(double d, double a, double v0, double vc, double v1) noexcept nogil:
    """Duration of one block: accelerate v0->vc, cruise, decelerate vc->v1 (a > 0)."""
    cdef double da, dd, vp2, vp
    if vc <= 0.0:
        return 0.0
    if v0 > vc:
        v0 = vc
    if v1 > vc:
        v1 = vc
    if a <= 0.0:
        return d / vc
    cdef double inv_a = 1.0 / a
    da = (vc * vc - v0 * v0) * 0.5 * inv_a
    dd = (vc * vc - v1 * v1) * 0.5 * inv_a
    if da + dd <= d:
        return (2.0 * vc - v0 - v1) * inv_a + (d - da - dd) / vc
    vp2 = (2.0 * a * d + v0 * v0 + v1 * v1) * 0.5
    vp = sqrt(vp2)
    if vp < v0 or vp < v1:
        return 2.0 * d / (v0 + v1) if v0 + v1 > 0.0 else d / vc
    return (2.0 * vp - v0 - v1) * inv_a


@cython.final
cdef class Analyzer:
    """Stream a G-code file through parser and planner; see the module docstring.

    ``limits`` keys (all mm, s): ``max_feedrate`` (X, Y, Z, E), ``max_accel``
    (X, Y, Z, E), ``print_accel``, ``retract_accel``, ``travel_accel``, ``jerk``
    (X, Y, Z, E), ``junction_deviation_mm`` (None for classic jerk),
    ``classic_jerk`` (bool), ``min_feedrate``, ``min_travel_feedrate``.
    """

    # limits
    cdef double max_feed[4]
    cdef double max_acc[4]
    cdef double jerk[4]
    cdef double acc_print, acc_retract, acc_travel, jd_mm, min_feed, min_travel_feed, min_xyz_acc
    cdef bint classic
    cdef bint limits_from_file
    # machine state
    cdef double pos[4]
    cdef double feed_mm_s
    cdef double speed_factor
    cdef double flow[16]
    cdef double extruded[16]
    cdef int tool
    cdef int max_tool
    cdef bint rel_xyz, rel_e_g91, rel_e_m83, inches
    cdef double max_z, min_x, max_x, min_y, max_y
    cdef bint any_extrusion
    cdef bint steppers_on
    cdef double fan
    # planner
    cdef Block* buf
    cdef int cap, mask, depth, head, count
    cdef double tstart[1024]
    cdef double prev_speed[4]
    cdef double prev_unit[3]
    cdef double prev_nominal, prev_safe
    cdef bint prev_e_only
    cdef double motion_s, dwell_s
    cdef long long blocks_queued, blocks_done
    # events
    cdef list events
    cdef list pending
    cdef Py_ssize_t pending_idx
    cdef long long next_pending_seq
    # layers
    cdef double layer_z
    cdef bint have_layer
    cdef long long cand_offset, cand_seq
    cdef double travel_mm, extrude_mm
    # counters
    cdef long long n_lines, n_commands, n_moves, n_unknown, n_overlong, n_absurd, n_garbage, n_arcs
    cdef long long first_absurd_offset, first_overlong_offset
    # line assembly across chunks
    cdef unsigned char* pend
    cdef Py_ssize_t pend_len, max_line
    cdef bint pend_overlong
    cdef long long offset, pend_offset
    # parameters of the current line
    cdef double vals[26]
    cdef unsigned int seen
    cdef bint line_absurd
    cdef bint finished
    cdef long long n_events, n_events_dropped, max_events
    cdef long long n_arc_segments, n_arcs_coarse

    def __cinit__(self, dict limits, int lookahead_blocks=16, Py_ssize_t max_line_bytes=4096,
                  long long max_events=200000):
        cdef int i
        if lookahead_blocks < 1:
            raise ValueError("lookahead_blocks must be >= 1")
        if max_line_bytes < 64:
            raise ValueError("max_line_bytes must be >= 64")
        self.depth = lookahead_blocks
        self.cap = 1
        while self.cap < lookahead_blocks + 1:
            self.cap *= 2
        self.mask = self.cap - 1
        self.buf = <Block*>malloc(self.cap * sizeof(Block))
        self.max_line = max_line_bytes
        self.pend = <unsigned char*>malloc(max_line_bytes + 1)
        if self.buf == NULL or self.pend == NULL:
            raise MemoryError()
        for i in range(4):
            self.max_feed[i] = float(limits["max_feedrate"][i])
            self.max_acc[i] = float(limits["max_accel"][i])
            if not self.max_feed[i] > 0.0:
                self.max_feed[i] = 1e300
            if not self.max_acc[i] > 0.0:
                self.max_acc[i] = 1e300
            self.jerk[i] = float(limits["jerk"][i])
            if self.jerk[i] < 0.0:
                self.jerk[i] = 0.0
            self.pos[i] = 0.0
            self.prev_speed[i] = 0.0
        self._update_min_acc()
        self.acc_print = max(1.0, float(limits["print_accel"]))
        self.acc_retract = max(1.0, float(limits["retract_accel"]))
        self.acc_travel = max(1.0, float(limits["travel_accel"]))
        jd = limits.get("junction_deviation_mm")
        self.jd_mm = 0.0 if jd is None else float(jd)
        self.classic = bool(limits.get("classic_jerk", False)) or jd is None or self.jd_mm <= 0.0
        self.min_feed = float(limits.get("min_feedrate", 0.0))
        self.min_travel_feed = float(limits.get("min_travel_feedrate", 0.0))
        self.limits_from_file = False
        self.feed_mm_s = 25.0        # until the file sets F: a common firmware default
        self.speed_factor = 1.0
        for i in range(MAX_TOOLS):
            self.flow[i] = 1.0
            self.extruded[i] = 0.0
        self.tool = 0
        self.max_tool = 0
        self.rel_xyz = False
        self.rel_e_g91 = False
        self.rel_e_m83 = False
        self.inches = False
        self.max_z = 0.0
        self.min_x = 1e300
        self.max_x = -1e300
        self.min_y = 1e300
        self.max_y = -1e300
        self.any_extrusion = False
        self.steppers_on = False
        self.fan = 0.0
        self.head = 0
        self.count = 0
        self.prev_nominal = 0.0
        self.prev_safe = 0.0
        self.prev_e_only = False
        self.prev_unit[0] = self.prev_unit[1] = self.prev_unit[2] = 0.0
        self.motion_s = 0.0
        self.dwell_s = 0.0
        self.blocks_queued = 0
        self.blocks_done = 0
        self.events = []
        self.pending = []
        self.pending_idx = 0
        self.next_pending_seq = -1
        self.layer_z = 0.0
        self.have_layer = False
        self.cand_offset = -1
        self.cand_seq = 0
        self.travel_mm = 0.0
        self.extrude_mm = 0.0
        self.n_lines = self.n_commands = self.n_moves = 0
        self.n_unknown = self.n_overlong = self.n_absurd = self.n_garbage = self.n_arcs = 0
        self.first_absurd_offset = -1
        self.first_overlong_offset = -1
        self.pend_len = 0
        self.pend_overlong = False
        self.offset = 0
        self.pend_offset = 0
        self.finished = False
        self.n_events = 0
        self.n_events_dropped = 0
        self.max_events = max_events
        self.n_arc_segments = 0
        self.n_arcs_coarse = 0

    cdef void _update_min_acc(self) noexcept:
        cdef int i
        self.min_xyz_acc = 1e300
        for i in range(3):
            if self.max_acc[i] > 0.0 and self.max_acc[i] < self.min_xyz_acc:
                self.min_xyz_acc = self.max_acc[i]

    def __dealloc__(self):
        if self.buf != NULL:
            free(self.buf)
        if self.pend != NULL:
            free(self.pend)

    # ------------------------------------------------------------------ events
    cdef bint _room_for_event(self) noexcept:
        """Bound the event list (memory flat even for a hostile file); count what is dropped."""
        if self.n_events >= self.max_events:
            self.n_events_dropped += 1
            return False
        self.n_events += 1
        return True

    cdef void _event(self, int kind, double a, double b, double c) noexcept:
        """Record an event at the time all moves queued so far are done."""
        if not self._room_for_event():
            return
        if self.blocks_queued == self.blocks_done:
            self.events.append((self.motion_s, kind, a, b, c))
        else:
            self.pending.append((self.blocks_queued, kind, a, b, c))
            if self.next_pending_seq < 0:
                self.next_pending_seq = self.blocks_queued

    cdef void _resolve_events(self) noexcept:
        """Give pending events whose moves are all executed their time."""
        cdef tuple ev
        while self.next_pending_seq >= 0 and self.next_pending_seq <= self.blocks_done:
            ev = <tuple>self.pending[self.pending_idx]
            self.events.append((self.motion_s, ev[1], ev[2], ev[3], ev[4]))
            self.pending_idx += 1
            if self.pending_idx < len(self.pending):
                self.next_pending_seq = <long long>(<tuple>self.pending[self.pending_idx])[0]
            else:
                self.pending.clear()
                self.pending_idx = 0
                self.next_pending_seq = -1

    # ----------------------------------------------------------------- planner
    cdef inline Block* _at(self, int k) noexcept:
        return &self.buf[(self.head + k) & self.mask]

    cdef void _replan(self) noexcept:
        """Reverse pass (newest block ends at a stop), then forward pass; block 0 is locked."""
        cdef int k
        cdef Block* b
        cdef Block* nb
        cdef double next_entry = MIN_PLANNER_SPEED, e, v
        k = self.count - 1
        while k >= 1:
            b = self._at(k)
            e = b.max_entry
            if not b.nominal_length:
                v = max_allowable(b.accel, next_entry, b.distance)
                if v < e:
                    e = v
            b.entry = e
            next_entry = e
            k -= 1
        for k in range(self.count - 1):
            b = self._at(k)
            nb = self._at(k + 1)
            if b.entry < nb.entry:
                v = max_allowable(b.accel, b.entry, b.distance)
                if v < nb.entry:
                    nb.entry = v

    cdef void _reverse_from_newest(self) noexcept:
        """Reverse pass after a block was added, stopping where nothing changes.

        Each stored entry (blocks 1..newest) is the reverse-pass value for the
        buffer as it was; a new block can only raise them, starting at its
        predecessor.  Once a recomputed entry equals the stored one, every
        earlier block would get the same input as before, so the pass stops:
        the same result as Marlin's full reverse pass, usually in one step.
        """
        cdef int k = self.count - 2
        cdef Block* b
        cdef double next_entry = self._at(self.count - 1).entry, e, v
        while k >= 1:
            b = self._at(k)
            e = b.max_entry
            if not b.nominal_length:
                v = next_entry * next_entry + 2.0 * b.accel * b.distance
                if v < e * e:
                    e = sqrt(v)
            if e == b.entry:
                break
            b.entry = e
            next_entry = e
            k -= 1

    cdef void _forward_oldest(self) noexcept:
        """Forward pass for the block about to execute: it can only accelerate so much."""
        cdef Block* b = self._at(0)
        cdef Block* nb
        cdef double v
        if self.count < 2:
            return
        nb = self._at(1)
        if b.entry < nb.entry:
            v = b.entry * b.entry + 2.0 * b.accel * b.distance
            if v < nb.entry * nb.entry:
                nb.entry = sqrt(v)

    cdef void _execute_oldest(self) noexcept:
        """Fix the oldest block's profile (exit = next entry, or a stop) and add its time."""
        cdef Block* b = self._at(0)
        cdef double exit_v = self._at(1).entry if self.count > 1 else MIN_PLANNER_SPEED
        if self.next_pending_seq >= 0:
            self._resolve_events()
        self.tstart[self.blocks_done & 1023] = self.motion_s
        self.motion_s += trapezoid_s(b.distance, b.accel, b.entry, b.nominal, exit_v)
        self.head = (self.head + 1) & self.mask
        self.count -= 1
        self.blocks_done += 1

    cdef void _sync(self) noexcept:
        """Empty the planner as the firmware does before G4/M400/M109/M190."""
        if self.count > 0:
            self._replan()
            while self.count > 0:
                self._execute_oldest()
        if self.next_pending_seq >= 0:
            self._resolve_events()
        self.prev_nominal = 0.0
        self.prev_safe = 0.0

    cdef void _plan(self, double dx, double dy, double dz, double de, double xyz_mm) noexcept:
        cdef double d[4]
        cdef double speed[4]
        cdef double au[4]
        cdef double unit[3]
        cdef double ju[3]
        cdef double dist, inv, nominal, factor, accel, comp, safe, vmax_junction, jerk_v
        cdef double smaller_factor, v_factor, v_exit, v_entry, maxj, cos_theta, jn, jacc
        cdef double sin_d2, vj2, theta, v_allowable_sq, mjerk
        cdef bint e_only, limited, moving
        cdef int i
        cdef Block* b
        d[0] = dx; d[1] = dy; d[2] = dz; d[3] = de
        e_only = xyz_mm < EPS_MM
        dist = fabs(de) if e_only else xyz_mm
        if dist < EPS_MM:
            return
        inv = 1.0 / dist
        nominal = self.feed_mm_s * self.speed_factor
        if de != 0.0:
            if nominal < self.min_feed:
                nominal = self.min_feed
        elif nominal < self.min_travel_feed:
            nominal = self.min_travel_feed
        if nominal < MIN_PLANNER_SPEED:
            nominal = MIN_PLANNER_SPEED
        # limits are kept > 0 (0 in a profile means "no limit", stored as a huge value)
        factor = 1.0
        for i in range(4):
            au[i] = fabs(d[i]) * inv
            if au[i] * nominal > self.max_feed[i]:
                if self.max_feed[i] / (au[i] * nominal) < factor:
                    factor = self.max_feed[i] / (au[i] * nominal)
        nominal *= factor
        for i in range(4):
            speed[i] = d[i] * inv * nominal
        if e_only:
            accel = self.acc_retract
        elif de != 0.0:
            accel = self.acc_print
        else:
            accel = self.acc_travel
        for i in range(4):
            if accel * au[i] > self.max_acc[i]:
                accel = self.max_acc[i] / au[i]

        for i in range(3):
            unit[i] = d[i] * inv
        moving = self.count > 0 and self.prev_nominal > 1e-6
        # classic jerk: the speed the block may start/stop at without any planning
        safe = nominal
        limited = False
        for i in range(4):
            jerk_v = au[i] * nominal
            maxj = self.jerk[i]
            if jerk_v > maxj:
                if limited:
                    mjerk = nominal * maxj
                    if jerk_v * safe > mjerk:
                        safe = mjerk / jerk_v
                else:
                    safe *= maxj / jerk_v
                    limited = True
        if self.classic or e_only or (moving and self.prev_e_only):
            if moving:
                v_factor = 1.0
                limited = False
                if nominal < self.prev_nominal:
                    vmax_junction = nominal
                    smaller_factor = nominal / self.prev_nominal
                else:
                    vmax_junction = self.prev_nominal
                    smaller_factor = 1.0
                for i in range(4):
                    v_exit = self.prev_speed[i] * smaller_factor
                    v_entry = speed[i]
                    if limited:
                        v_exit *= v_factor
                        v_entry *= v_factor
                    if v_exit > v_entry:
                        if v_entry > 0.0 or v_exit < 0.0:
                            jerk_v = v_exit - v_entry
                        else:
                            jerk_v = v_exit if v_exit > -v_entry else -v_entry
                    else:
                        if v_entry < 0.0 or v_exit > 0.0:
                            jerk_v = v_entry - v_exit
                        else:
                            jerk_v = -v_exit if -v_exit > v_entry else v_entry
                    maxj = self.jerk[i]
                    if jerk_v > maxj:
                        v_factor *= maxj / jerk_v
                        limited = True
                if limited:
                    vmax_junction *= v_factor
                if self.prev_safe > vmax_junction * 0.99 and safe > vmax_junction * 0.99:
                    vmax_junction = safe
            else:
                vmax_junction = safe
        else:
            if moving:
                jacc = accel
                cos_theta = -(self.prev_unit[0] * unit[0] + self.prev_unit[1] * unit[1]
                              + self.prev_unit[2] * unit[2])
                if cos_theta > 0.999999:
                    vj2 = MIN_PLANNER_SPEED * MIN_PLANNER_SPEED
                else:
                    if cos_theta < -0.999999:
                        cos_theta = -0.999999
                    jn = 0.0
                    for i in range(3):
                        ju[i] = unit[i] - self.prev_unit[i]
                        jn += ju[i] * ju[i]
                    # the junction's acceleration along its own direction, capped per axis
                    # (a unit vector's components are <= 1: no cap possible below the smallest limit)
                    if jn > 0.0 and jacc > self.min_xyz_acc:
                        jn = 1.0 / sqrt(jn)
                        for i in range(3):
                            comp = fabs(ju[i]) * jn
                            if comp > 0.0 and jacc * comp > self.max_acc[i]:
                                jacc = self.max_acc[i] / comp
                    sin_d2 = sqrt(0.5 * (1.0 - cos_theta))
                    vj2 = jacc * self.jd_mm * sin_d2 / (1.0 - sin_d2)
                if vj2 > nominal * nominal:
                    vj2 = nominal * nominal
                if vj2 > self.prev_nominal * self.prev_nominal:
                    vj2 = self.prev_nominal * self.prev_nominal
                # short segments (arcs, curves): limit by the speed that turns the path through
                # the junction angle within the segment; theta <= pi, so skip acos when it cannot bind
                if cos_theta <= 0.999999 and dist < 1.0 and dist * jacc < vj2 * M_PI:
                    theta = M_PI - acos(cos_theta)
                    if theta > 1e-9 and dist * jacc / theta < vj2:
                        vj2 = dist * jacc / theta
                vmax_junction = sqrt(vj2)
            else:
                vmax_junction = MIN_PLANNER_SPEED
        if not e_only:
            for i in range(3):
                self.prev_unit[i] = unit[i]

        v_allowable_sq = MIN_PLANNER_SPEED * MIN_PLANNER_SPEED + 2.0 * accel * dist
        if self.count == self.depth:
            # buffer full: the oldest block starts executing, its profile is now fixed
            self._forward_oldest()
            self._execute_oldest()
        b = self._at(self.count)
        b.distance = dist
        b.nominal = nominal
        b.accel = accel
        b.max_entry = vmax_junction
        b.entry = vmax_junction if vmax_junction * vmax_junction < v_allowable_sq else sqrt(v_allowable_sq)
        b.nominal_length = nominal * nominal <= v_allowable_sq
        self.count += 1
        self.blocks_queued += 1
        self._reverse_from_newest()
        for i in range(4):
            self.prev_speed[i] = speed[i]
        self.prev_nominal = nominal
        self.prev_safe = safe
        self.prev_e_only = e_only

    # ------------------------------------------------------------------- moves
    cdef void _move_to(self, double tx, double ty, double tz, double te, long long offset) noexcept:
        cdef double dx = tx - self.pos[0], dy = ty - self.pos[1], dz = tz - self.pos[2]
        cdef double de = te - self.pos[3]
        cdef double xy2 = dx * dx + dy * dy
        cdef double xyz_mm = sqrt(xy2 + dz * dz)
        cdef bint extruding
        cdef double dzl
        self.pos[0] = tx
        self.pos[1] = ty
        self.pos[2] = tz
        self.pos[3] = te
        if xyz_mm < EPS_MM and fabs(de) < EPS_MM:
            return
        self.n_moves += 1
        if not self.steppers_on:
            self._steppers(True)
        if self.tool < MAX_TOOLS:
            self.extruded[self.tool] += de * self.flow[self.tool]
        extruding = de > 0.0 and xy2 > 0.0
        if not extruding and dz != 0.0 and self.cand_offset < 0:
            # first Z change since the last extrusion: where the next layer may begin
            self.cand_offset = offset
            self.cand_seq = self.blocks_queued
        if extruding:
            self.extrude_mm += xyz_mm
            self.any_extrusion = True
            if tz > self.max_z:
                self.max_z = tz
            if tx < self.min_x: self.min_x = tx
            if tx > self.max_x: self.max_x = tx
            if ty < self.min_y: self.min_y = ty
            if ty > self.max_y: self.max_y = ty
            dzl = fabs(tz - self.layer_z)
            # a new layer: extrusion at a new height reached by a non-extruding Z move,
            # or (spiral vase: Z rises while extruding) 0.05 mm above the last layer start
            if not self.have_layer or (dzl > 1e-6 and (self.cand_offset >= 0 or dzl >= 0.05)):
                if self.cand_offset < 0:
                    self.cand_offset = offset
                    self.cand_seq = self.blocks_queued
                self._layer_event(self.cand_offset, tz, self.cand_seq)
                self.have_layer = True
                self.layer_z = tz
            self.cand_offset = -1
        else:
            self.travel_mm += xyz_mm
        self._plan(dx, dy, dz, de, xyz_mm)

    cdef void _layer_event(self, long long offset, double z, long long seq) noexcept:
        """A layer starting at the move numbered ``seq``: its time is that move's start."""
        cdef double t
        cdef Py_ssize_t j
        if not self._room_for_event():
            return
        if seq <= self.blocks_done:
            if seq == self.blocks_done:
                t = self.motion_s
            elif self.blocks_done - seq <= 1024:
                t = self.tstart[seq & 1023]
            else:
                t = self.tstart[self.blocks_done & 1023]
            self.events.append((t, EV_LAYER, <double>offset, z, 0.0))
            return
        # still in the planner buffer: keep the pending list ordered by move number
        j = len(self.pending)
        while j > self.pending_idx and <long long>(<tuple>self.pending[j - 1])[0] > seq:
            j -= 1
        self.pending.insert(j, (seq, EV_LAYER, <double>offset, z, 0.0))
        self.next_pending_seq = <long long>(<tuple>self.pending[self.pending_idx])[0]

    cdef void _linear(self, long long offset) noexcept:
        cdef double scale = 25.4 if self.inches else 1.0
        cdef double tx = self.pos[0], ty = self.pos[1], tz = self.pos[2], te = self.pos[3]
        if self.seen & (1u << (ord('F') - 65)):
            if self.vals[5] > 0.0:
                self.feed_mm_s = self.vals[5] * scale / 60.0
        if self.seen & (1u << 23):  # X
            tx = (tx + self.vals[23] * scale) if self.rel_xyz else self.vals[23] * scale
        if self.seen & (1u << 24):  # Y
            ty = (ty + self.vals[24] * scale) if self.rel_xyz else self.vals[24] * scale
        if self.seen & (1u << 25):  # Z
            tz = (tz + self.vals[25] * scale) if self.rel_xyz else self.vals[25] * scale
        if self.seen & (1u << 4):   # E
            te = (te + self.vals[4] * scale) if (self.rel_e_g91 or self.rel_e_m83) else self.vals[4] * scale
        self._move_to(tx, ty, tz, te, offset)

    cdef void _arc(self, bint clockwise, long long offset) noexcept:
        """G2/G3 in the XY plane with I/J (centre offsets) or R, split as Marlin does."""
        cdef double scale = 25.4 if self.inches else 1.0
        cdef double sx = self.pos[0], sy = self.pos[1], sz = self.pos[2], se = self.pos[3]
        cdef double tx = sx, ty = sy, tz = sz, te = se
        cdef double cx, cy, r, rx, ry, ax, ay, angle, flat_mm, seg_mm, h, mx, my, dx, dy, q
        cdef double x, y, a0, ai
        cdef long long n, k
        if self.seen & (1u << (ord('F') - 65)):
            if self.vals[5] > 0.0:
                self.feed_mm_s = self.vals[5] * scale / 60.0
        if self.seen & (1u << 23):
            tx = (sx + self.vals[23] * scale) if self.rel_xyz else self.vals[23] * scale
        if self.seen & (1u << 24):
            ty = (sy + self.vals[24] * scale) if self.rel_xyz else self.vals[24] * scale
        if self.seen & (1u << 25):
            tz = (sz + self.vals[25] * scale) if self.rel_xyz else self.vals[25] * scale
        if self.seen & (1u << 4):
            te = (se + self.vals[4] * scale) if (self.rel_e_g91 or self.rel_e_m83) else self.vals[4] * scale
        if self.seen & (1u << 17):  # R: centre from radius (negative R: the long way round)
            r = self.vals[17] * scale
            dx = tx - sx
            dy = ty - sy
            q = sqrt(dx * dx + dy * dy)
            if q < EPS_MM or fabs(r) < q * 0.5:
                self._move_to(tx, ty, tz, te, offset)
                return
            h = sqrt(r * r - q * q * 0.25)
            if (clockwise and r > 0.0) or (not clockwise and r < 0.0):
                h = -h
            mx = (sx + tx) * 0.5
            my = (sy + ty) * 0.5
            cx = mx - h * dy / q
            cy = my + h * dx / q
        else:
            cx = sx + (self.vals[8] * scale if self.seen & (1u << 8) else 0.0)   # I
            cy = sy + (self.vals[9] * scale if self.seen & (1u << 9) else 0.0)   # J
        rx = sx - cx
        ry = sy - cy
        r = sqrt(rx * rx + ry * ry)
        if r < EPS_MM:
            self._move_to(tx, ty, tz, te, offset)
            return
        ax = tx - cx
        ay = ty - cy
        angle = atan2(rx * ay - ry * ax, rx * ax + ry * ay)
        if clockwise:
            if angle >= 0.0:
                angle -= 2.0 * M_PI
        else:
            if angle <= 0.0:
                angle += 2.0 * M_PI
        if fabs(tx - sx) < EPS_MM and fabs(ty - sy) < EPS_MM:
            angle = -2.0 * M_PI if clockwise else 2.0 * M_PI
        flat_mm = fabs(angle) * r
        self.n_arcs += 1
        seg_mm = MAX_ARC_SEGMENT_MM
        n = <long long>floor(flat_mm / seg_mm)
        if n < 1:
            n = 1
        if n > MAX_ARC_SEGMENTS:
            n = MAX_ARC_SEGMENTS
        # work budget: a file of huge arcs must not take hours (real files stay far below it)
        if self.n_arc_segments > 16 * self.n_lines + 1000000:
            n = 1
            self.n_arcs_coarse += 1
        self.n_arc_segments += n
        # rotate the radius vector by a fixed step (exact trig once per arc, not per segment)
        ai = angle / <double>n
        a0 = cos(ai)
        q = sin(ai)
        for k in range(1, n):
            x = rx * a0 - ry * q
            ry = rx * q + ry * a0
            rx = x
            self._move_to(cx + rx, cy + ry, sz + (tz - sz) * k / n, se + (te - se) * k / n, offset)
        self._move_to(tx, ty, tz, te, offset)

    # ----------------------------------------------------------------- parsing
    cdef inline bint _has(self, char letter) noexcept:
        return (self.seen >> (letter - 65)) & 1u

    cdef inline double _val(self, char letter) noexcept:
        return self.vals[letter - 65]

    cdef int _parse_params(self, const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept:
        """Fill vals/seen with LETTER number pairs; stop at ';' or '*' or junk.

        ``p[n]`` must be a newline (``feed`` guarantees it): the inner loops stop
        on it without bounds checks.
        """
        cdef unsigned char c
        cdef int letter
        cdef double v
        cdef long long mant
        cdef int nfrac, ndig
        cdef bint neg
        cdef unsigned int seen = 0
        cdef bint absurd = False
        while i < n:
            c = CHAR_CLASS[p[i]]
            if c == CC_SPACE:
                i += 1
                continue
            if c == CC_STOP:
                break
            if c != CC_LETTER:
                self.seen = seen
                return -1  # junk where a parameter letter should be
            letter = (p[i] | 32) - 97
            i += 1
            while p[i] == 32 or p[i] == 9:
                i += 1
            neg = False
            if p[i] == 45 or p[i] == 43:
                neg = p[i] == 45
                i += 1
            # digits accumulate in an integer (exact, fast); 8+ integer digits is absurd
            mant = 0
            nfrac = 0
            ndig = 0
            while CHAR_CLASS[p[i]] == CC_DIGIT:
                if ndig < 18:
                    mant = mant * 10 + (p[i] - 48)
                ndig += 1
                i += 1
            if ndig > 7:
                absurd = True
            if p[i] == 46:
                i += 1
                while CHAR_CLASS[p[i]] == CC_DIGIT:
                    if ndig < 18:
                        mant = mant * 10 + (p[i] - 48)
                        nfrac += 1
                        ndig += 1
                    i += 1
            if i < n and CHAR_CLASS[p[i]] == CC_OTHER:
                self.seen = seen
                return -1  # e.g. "X1.2.3", "X1#"
            v = <double>mant / POW10[nfrac] if nfrac > 0 else <double>mant
            self.vals[letter] = -v if neg else v
            seen |= (1u << letter)
        self.seen = seen
        self.line_absurd = absurd
        return 0

    cdef void _line(self, const unsigned char* p, Py_ssize_t n, long long offset) noexcept:
        cdef Py_ssize_t i = 0
        cdef unsigned char c
        cdef int code = 0, ndig = 0
        self.n_lines += 1
        while i < n and (p[i] == 32 or p[i] == 9 or p[i] == 13):
            i += 1
        if i >= n or p[i] == 59:
            return
        c = p[i]
        if c == 78 or c == 110:  # N<line number>
            i += 1
            while i < n and 48 <= p[i] <= 57:
                i += 1
            while i < n and (p[i] == 32 or p[i] == 9):
                i += 1
            if i >= n:
                return
            c = p[i]
        if 97 <= c <= 122:
            c -= 32
        if c != 71 and c != 77 and c != 84:  # G M T
            if c == 40 or c == 37 or c == 13:   # "(comment)", "%" program marks
                return
            self.n_garbage += 1
            return
        i += 1
        while i < n and 48 <= p[i] <= 57 and ndig < 6:
            code = code * 10 + (p[i] - 48)
            ndig += 1
            i += 1
        if ndig == 0 or (i < n and 48 <= p[i] <= 57):
            self.n_garbage += 1
            return
        if i < n and p[i] == 46:   # G29.1-style subcodes: ignored
            i += 1
            while i < n and 48 <= p[i] <= 57:
                i += 1
        self.n_commands += 1
        if c == 84:  # T<n>
            self._tool(code)
            return
        if c == 71:
            if code <= 3 or code == 4 or code == 92 or code == 28 or code == 20 or code == 21 \
                    or code == 90 or code == 91:
                if self._parse_params(p, i, n) < 0:
                    self.n_garbage += 1
                    return
                if self.line_absurd:
                    self._absurd(offset)
                    return
                self._gcode(code, offset)
            else:
                self.n_unknown += 1
            return
        # M codes
        if code in (82, 83, 104, 109, 140, 190, 106, 107, 84, 18, 17, 201, 203, 204, 205, 220,
                    221, 400, 0, 1, 600, 81):
            if self._parse_params(p, i, n) < 0:
                if code in (0, 1, 600):   # M0/M1 take a free-text message
                    self.seen = 0
                else:
                    self.n_garbage += 1
                    return
            if self.line_absurd:
                self._absurd(offset)
                return
            self._mcode(code, offset)
        else:
            self.n_unknown += 1

    cdef void _steppers(self, bint on) noexcept:
        if on != self.steppers_on:
            self.steppers_on = on
            self._event(EV_STEPPERS, 0.0, 1.0 if on else 0.0, 0.0)

    cdef void _absurd(self, long long offset) noexcept:
        self.n_absurd += 1
        if self.first_absurd_offset < 0:
            self.first_absurd_offset = offset

    cdef void _tool(self, int t) noexcept:
        if t >= MAX_TOOLS:
            self.n_absurd += 1
            return
        if t != self.tool:
            self.tool = t
            if t > self.max_tool:
                self.max_tool = t
            self._event(EV_TOOL, t, 0.0, 0.0)

    cdef void _gcode(self, int code, long long offset) noexcept:
        cdef double scale = 25.4 if self.inches else 1.0
        cdef double ms
        cdef bint any_axis
        if code == 0 or code == 1:
            self._linear(offset)
        elif code == 2 or code == 3:
            self._arc(code == 2, offset)
        elif code == 4:
            ms = 0.0
            if self._has(b'P'):
                ms = self._val(b'P')
            if self._has(b'S'):
                ms = self._val(b'S') * 1000.0
            self._sync()
            if ms > 0.0:
                self.motion_s += ms / 1000.0
                self.dwell_s += ms / 1000.0
        elif code == 28:
            # homing: modelled as a move to the origin of the named axes at the current
            # feedrate (the firmware's homing speed and probing are not in the file)
            any_axis = self._has(b'X') or self._has(b'Y') or self._has(b'Z')
            self._steppers(True)
            self._move_to(0.0 if (not any_axis or self._has(b'X')) else self.pos[0],
                          0.0 if (not any_axis or self._has(b'Y')) else self.pos[1],
                          0.0 if (not any_axis or self._has(b'Z')) else self.pos[2],
                          self.pos[3], offset)
        elif code == 92:
            if self._has(b'X'): self.pos[0] = self._val(b'X') * scale
            if self._has(b'Y'): self.pos[1] = self._val(b'Y') * scale
            if self._has(b'Z'): self.pos[2] = self._val(b'Z') * scale
            if self._has(b'E'): self.pos[3] = self._val(b'E') * scale
        elif code == 90:
            self.rel_xyz = False
            self.rel_e_g91 = False
        elif code == 91:
            self.rel_xyz = True
            self.rel_e_g91 = True
        elif code == 20:
            self.inches = True
        elif code == 21:
            self.inches = False

    cdef void _mcode(self, int code, long long offset) noexcept:
        cdef int t
        cdef double v
        if code == 82:
            self.rel_e_m83 = False
        elif code == 83:
            self.rel_e_m83 = True
        elif code == 104 or code == 109:
            t = <int>self._val(b'T') if self._has(b'T') else self.tool
            if t < 0 or t >= MAX_TOOLS:
                self.n_absurd += 1
                return
            if self._has(b'S') or self._has(b'R'):
                v = self._val(b'R') if self._has(b'R') else self._val(b'S')
                if code == 104:
                    self._event(EV_HOTEND_TARGET, t, v, 0.0)
                else:
                    self._sync()
                    self.cand_offset = -1  # a layer starts after the wait, not at a Z move before it
                    self._event(EV_HOTEND_WAIT, t, v, 1.0 if self._has(b'R') else 0.0)
        elif code == 140 or code == 190:
            if self._has(b'S') or self._has(b'R'):
                v = self._val(b'R') if self._has(b'R') else self._val(b'S')
                if code == 140:
                    self._event(EV_BED_TARGET, 0.0, v, 0.0)
                else:
                    self._sync()
                    self.cand_offset = -1
                    self._event(EV_BED_WAIT, 0.0, v, 1.0 if self._has(b'R') else 0.0)
        elif code == 106:
            if self._has(b'P') and self._val(b'P') != 0.0:
                return  # only the part-cooling fan (P0) is in the power model
            v = self._val(b'S') / 255.0 if self._has(b'S') else 1.0
            if v < 0.0: v = 0.0
            if v > 1.0: v = 1.0
            if v != self.fan:
                self.fan = v
                self._event(EV_FAN, 0.0, v, 0.0)
        elif code == 107:
            if self._has(b'P') and self._val(b'P') != 0.0:
                return
            if self.fan != 0.0:
                self.fan = 0.0
                self._event(EV_FAN, 0.0, 0.0, 0.0)
        elif code == 84 or code == 18:
            self._sync()
            self._steppers(False)
        elif code == 17:
            self._steppers(True)
        elif code == 81:
            self._sync()
            self._steppers(False)
        elif code == 201:
            self._axes(self.max_acc, 1.0)
            self._update_min_acc()
        elif code == 203:
            self._axes(self.max_feed, 1.0)
        elif code == 204:
            self.limits_from_file = True
            if self._has(b'S') and self._val(b'S') > 0.0:
                self.acc_print = self._val(b'S')
                self.acc_travel = self._val(b'S')
            if self._has(b'P') and self._val(b'P') > 0.0:
                self.acc_print = self._val(b'P')
            if self._has(b'R') and self._val(b'R') > 0.0:
                self.acc_retract = self._val(b'R')
            if self._has(b'T') and self._val(b'T') > 0.0:
                if self._has(b'S'):
                    # legacy form "M204 S<print> T<retract>" (Marlin 1.x, Prusa MK2/MK3 firmware)
                    self.acc_retract = self._val(b'T')
                else:
                    self.acc_travel = self._val(b'T')
        elif code == 205:
            self.limits_from_file = True
            if self._has(b'X') or self._has(b'Y'):
                self.classic = True
            self._axes(self.jerk, 0.0)
            if self._has(b'J') and self._val(b'J') > 0.0:
                self.jd_mm = self._val(b'J')
                self.classic = False
            if self._has(b'S') and self._val(b'S') >= 0.0:
                self.min_feed = self._val(b'S')
            if self._has(b'T') and self._val(b'T') >= 0.0:
                self.min_travel_feed = self._val(b'T')
        elif code == 220:
            if self._has(b'S') and self._val(b'S') > 0.0:
                self.speed_factor = self._val(b'S') / 100.0
        elif code == 221:
            t = <int>self._val(b'T') if self._has(b'T') else self.tool
            if 0 <= t < MAX_TOOLS and self._has(b'S') and self._val(b'S') >= 0.0:
                self.flow[t] = self._val(b'S') / 100.0
        elif code == 400:
            self._sync()
        elif code == 0 or code == 1 or code == 600:
            self._sync()
            self._event(EV_PAUSE, offset, 0.0, 0.0)

    cdef void _axes(self, double* target, double minimum) noexcept:
        """M201/M203/M205: set X Y Z E values (a value below ``minimum`` is ignored)."""
        self.limits_from_file = True
        if self._has(b'X') and self._val(b'X') >= minimum: target[0] = self._val(b'X')
        if self._has(b'Y') and self._val(b'Y') >= minimum: target[1] = self._val(b'Y')
        if self._has(b'Z') and self._val(b'Z') >= minimum: target[2] = self._val(b'Z')
        if self._has(b'E') and self._val(b'E') >= minimum: target[3] = self._val(b'E')

    # --------------------------------------------------------------- streaming
    def feed(self, const unsigned char[::1] chunk not None):
        """Consume the next bytes of the file (any split; lines may span chunks)."""
        cdef const unsigned char* p
        cdef Py_ssize_t n = chunk.shape[0]
        cdef Py_ssize_t pos = 0, end, take
        cdef const unsigned char* hit
        if self.finished:
            raise RuntimeError("feed() after finish()")
        if n == 0:
            return
        p = &chunk[0]
        while pos < n:
            hit = <const unsigned char*>memchr(p + pos, 10, n - pos)
            end = n if hit == NULL else hit - p
            if self.pend_len > 0 or self.pend_overlong or hit == NULL:
                # (part of) a line spanning chunks: assemble it in the pending buffer
                if self.pend_len == 0 and not self.pend_overlong:
                    self.pend_offset = self.offset + pos
                take = end - pos
                if not self.pend_overlong:
                    if self.pend_len + take > self.max_line:
                        self.pend_overlong = True
                        self.pend_len = 0
                    else:
                        memcpy(self.pend + self.pend_len, p + pos, take)
                        self.pend_len += take
                if hit != NULL:
                    self._finish_pending()
            else:
                if end - pos > self.max_line:
                    self._overlong(self.offset + pos)
                else:
                    self._line(p + pos, end - pos, self.offset + pos)
            pos = end + 1 if hit != NULL else n
        self.offset += n

    cdef void _overlong(self, long long offset) noexcept:
        self.n_lines += 1
        self.n_overlong += 1
        if self.first_overlong_offset < 0:
            self.first_overlong_offset = offset

    cdef void _finish_pending(self) noexcept:
        if self.pend_overlong:
            self._overlong(self.pend_offset)
        elif self.pend_len > 0:
            self.pend[self.pend_len] = 10  # the parser relies on a newline after the line
            self._line(self.pend, self.pend_len, self.pend_offset)
        else:
            self.n_lines += 1
        self.pend_len = 0
        self.pend_overlong = False

    def finish(self):
        """End of file: last line without newline, empty the planner, return the results."""
        cdef int i
        if not self.finished:
            if self.pend_len > 0 or self.pend_overlong:
                self._finish_pending()
            self._sync()
            self.finished = True
        return {
            "motion_s": self.motion_s,
            "dwell_s": self.dwell_s,
            "bytes": self.offset,
            "lines": self.n_lines,
            "commands": self.n_commands,
            "moves": self.n_moves,
            "blocks": self.blocks_done,
            "arcs": self.n_arcs,
            "arcs_coarse": self.n_arcs_coarse,
            "unknown_commands": self.n_unknown,
            "garbage_lines": self.n_garbage,
            "overlong_lines": self.n_overlong,
            "absurd_lines": self.n_absurd,
            "first_absurd_offset": self.first_absurd_offset,
            "first_overlong_offset": self.first_overlong_offset,
            "extruded_mm": [self.extruded[i] for i in range(self.max_tool + 1)],
            "extrude_path_mm": self.extrude_mm,
            "travel_path_mm": self.travel_mm,
            "max_z_mm": self.max_z,
            "extents_mm": (self.min_x, self.max_x, self.min_y, self.max_y) if self.any_extrusion else None,
            "limits_from_file": self.limits_from_file,
            "classic_jerk": self.classic,
            "events": self.events,
            "events_dropped": self.n_events_dropped,
        }
