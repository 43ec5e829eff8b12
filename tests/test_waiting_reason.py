"""One waiting reason at a time (issue #19): the log says what a job waits for once, when that
changes, not each time two answers of the same gate alternate or the forecast moves the window."""
from node.runner import WaitingLog

ENERGY = "energy: energy above the 30 % reserve"


def logged(answers: list[tuple[str, str, str | None]]) -> list[str]:
    """The reasons a WaitingLog lets through, for (job id, reason, waits_for) answers in order."""
    waiting_log = WaitingLog()
    return [reason for job_id, reason, waits_for in answers if waiting_log.should_log(job_id, waits_for or reason)]


def test_the_window_and_the_reserve_guard_are_one_wait() -> None:
    flip = [("j1", "energy: needs 20 Wh; first window above the 30 % reserve is today 10:05", ENERGY),
            ("j1", "energy: the battery is too close to the 30 % reserve", ENERGY)] * 5
    flip.append(("j1", "energy: needs 20 Wh; first window above the 30 % reserve is today 10:10", ENERGY))
    assert logged(flip) == [flip[0][1]]


def test_a_new_gate_a_new_job_or_a_reason_without_waits_for_is_logged_when_it_changes() -> None:
    answers = [("j1", "energy: needs 20 Wh; first window ... 10:05", ENERGY),
               ("j1", "battery: the battery is low (level below_reserve)", None),
               ("j1", "battery: the battery is low (level below_reserve)", None),
               ("j1", "energy: needs 20 Wh; first window ... 11:05", ENERGY),
               ("j2", "energy: the plan starts j1 first; ...", "energy: part-a to print first")]
    assert logged(answers) == [answers[0][1], answers[1][1], answers[3][1], answers[4][1]]


def test_after_a_print_the_same_wait_is_logged_again() -> None:
    waiting_log = WaitingLog()
    assert waiting_log.should_log("j1", ENERGY) and not waiting_log.should_log("j1", ENERGY)
    waiting_log.clear()  # the job printed (the runner clears it when a print starts)
    assert waiting_log.should_log("j1", ENERGY)
