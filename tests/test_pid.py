"""PID and loop modes: anti-windup, derivative on measurement, limits, ramps, bumpless
transfer between the Redfish modes Automatic / Override / Manual / Disabled."""

from __future__ import annotations

import math

import pytest

from edge_runtime.control.modes import ControlMode, LoopMode, ModalPid, Range, parse_mode
from edge_runtime.control.pid import Pid, PidConfig

pytestmark = pytest.mark.timeout(10)


def test_proportional_action_and_sign() -> None:
    reverse = Pid(PidConfig(kp=2.0, out_min=-100.0), setpoint=10.0)
    assert reverse.update(8.0, 0.1) == pytest.approx(4.0)  # below setpoint: output up
    direct = Pid(PidConfig(kp=2.0, out_min=-100.0, direct_acting=True), setpoint=10.0)
    assert direct.update(12.0, 0.1) == pytest.approx(4.0)  # cooling: hotter opens more


def test_integral_removes_offset_on_a_first_order_plant() -> None:
    pid = Pid(PidConfig(kp=1.0, ti_s=5.0), setpoint=50.0)
    y = 0.0
    for _ in range(3000):  # 300 s of a plant y' = (u - y) / 10
        u = pid.update(y, 0.1)
        y += (u - y) * 0.1 / 10.0
    assert y == pytest.approx(50.0, abs=0.05)


def test_anti_windup_recovers_at_once_when_the_error_turns() -> None:
    cfg = PidConfig(kp=1.0, ti_s=2.0, out_max=100.0)
    pid = Pid(cfg, setpoint=1000.0)  # unreachable: the output sits at 100 for a long time
    for _ in range(2000):
        pid.update(0.0, 0.1)
    assert pid.output == 100.0
    # The integral stays near what the limit explains, not 1000 s of accumulated error.
    assert cfg.kp * pid.integral < 100.0
    pid.set_setpoint(0.0)
    out = [pid.update(10.0, 0.1) for _ in range(5)]
    assert out[-1] < 100.0  # leaves the limit within 0.5 s (a wound-up one would take ages)


def test_naive_integration_would_have_wound_up() -> None:
    # The same loop without back-calculation or clamping: the integral grows to ~10^4 % and
    # the output would stay pinned; this guards the meaning of the test above.
    integral = sum(1000.0 * 0.1 / 2.0 for _ in range(2000))
    assert integral > 10_000


def test_derivative_acts_on_measurement_only_and_is_filtered() -> None:
    pid = Pid(PidConfig(kp=1.0, td_s=2.0, derivative_filter_n=5.0, out_min=-1e6,
                        out_max=1e6), setpoint=0.0)
    pid.update(0.0, 0.1)
    before = pid.output
    pid.set_setpoint(10.0)
    assert pid.update(0.0, 0.1) - before == pytest.approx(10.0)  # P only: no setpoint kick
    # A measurement ramp of 1/s: unfiltered D would be kp*Td*1 = 2 at once.
    first = pid.update(0.1, 0.1)
    p_term = -(0.1 - 10.0)
    assert 0.0 < p_term - first < 2.0
    for i in range(2, 100):
        out = pid.update(0.1 * i, 0.1)
    assert p_term_at(0.1 * 99) - out == pytest.approx(2.0, rel=0.02)


def p_term_at(pv: float) -> float:
    return 10.0 - pv


def test_output_rate_limit_and_limits() -> None:
    pid = Pid(PidConfig(kp=100.0, rate_limit_per_s=5.0, out_max=80.0), setpoint=10.0,
              output=0.0)
    outs = [pid.update(0.0, 0.1) for _ in range(200)]
    steps = [b - a for a, b in zip([0.0, *outs], outs, strict=False)]
    assert max(steps) <= 0.5 + 1e-9
    assert outs[-1] == 80.0


def test_setpoint_ramp() -> None:
    pid = Pid(PidConfig(kp=1.0, setpoint_ramp_per_s=0.5, out_min=-100.0), setpoint=20.0)
    pid.set_setpoint(25.0)
    for _ in range(40):
        pid.update(20.0, 0.1)
    assert pid.working_setpoint == pytest.approx(22.0)
    for _ in range(100):
        pid.update(20.0, 0.1)
    assert pid.working_setpoint == 25.0


def test_track_is_bumpless() -> None:
    pid = Pid(PidConfig(kp=3.0, ti_s=10.0), setpoint=30.0)
    pid.track(42.0, 31.0)
    assert pid.update(31.0, 0.1) == pytest.approx(42.0, abs=0.5)


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"kp": 0.0}, "kp"), ({"kp": -1.0}, "kp"), ({"kp": 1.0, "ti_s": 0.0}, "ti_s"),
    ({"kp": 1.0, "out_min": 5.0, "out_max": 5.0}, "out_max"),
    ({"kp": 1.0, "rate_limit_per_s": 0.0}, "rate_limit_per_s"),
    ({"kp": math.nan}, "kp"),
])
def test_bad_tuning_is_refused_with_the_key(kwargs: dict[str, float], key: str) -> None:
    with pytest.raises(ValueError, match=key):
        PidConfig(**kwargs)  # type: ignore[arg-type]


# -- modes ------------------------------------------------------------------------------------
def test_mode_names_are_redfish_control_modes() -> None:
    assert [m.value for m in ControlMode] == ["Automatic", "Override", "Manual", "Disabled"]
    assert parse_mode("manual") is ControlMode.MANUAL
    with pytest.raises(ValueError, match="Automatic, Override, Manual, Disabled"):
        parse_mode("auto")


def _loop(sp: float = 30.0) -> ModalPid:
    mode = LoopMode("supply_temp", setpoint=sp, setpoint_range=Range(15.0, 45.0, "degC"),
                    output_range=Range(0.0, 100.0, "%"))
    return ModalPid(Pid(PidConfig(kp=10.0, ti_s=20.0, direct_acting=True), setpoint=sp,
                        output=50.0), mode)


def test_refused_mode_changes_leave_the_loop_as_it_was() -> None:
    loop = _loop()
    for mode, value, why in [("Override", None, "needs a setpoint"),
                             ("Override", 60.0, r"outside 15\.\.45"),
                             ("Manual", 120.0, r"outside 0\.\.100"),
                             ("Manual", "50", "must be a number"),
                             ("Automatic", 3.0, "takes no value"),
                             ("Bogus", None, "mode must be one of")]:
        with pytest.raises(ValueError, match=why):
            loop.set_mode(mode, value)  # type: ignore[arg-type]  # a wire value
        assert loop.mode.mode is ControlMode.AUTOMATIC
        assert loop.mode.setpoint == 30.0


def test_manual_to_automatic_is_bumpless_and_disabled_writes_nothing() -> None:
    loop = _loop()
    for _ in range(10):
        loop.run(31.0, 0.1, current_output=50.0)
    loop.set_mode("Manual")  # no value: holds what the loop outputs now
    held = loop.pid.output
    assert loop.run(33.0, 0.1, current_output=held) == pytest.approx(held)
    loop.set_mode("Manual", 70.0)
    assert loop.run(33.0, 0.1, current_output=held) == 70.0
    loop.set_mode("Automatic")
    first = loop.run(33.0, 0.1, current_output=70.0)
    assert first == pytest.approx(70.0, abs=0.5)  # no step at the hand-over
    loop.set_mode("Disabled")
    assert loop.run(33.0, 0.1, current_output=12.0) is None
    loop.set_mode("Automatic")
    assert loop.run(33.0, 0.1, current_output=12.0) == pytest.approx(12.0, abs=0.5)


def test_override_regulates_to_the_operator_setpoint() -> None:
    loop = _loop()
    loop.set_mode("Override", 25.0)
    assert loop.mode.setpoint == 25.0
    out = loop.run(30.0, 0.1, current_output=50.0)
    assert out is not None and out > 50.0  # 5 K above the override: opens further
    loop.set_mode("Automatic")
    back = loop.run(30.0, 0.1, current_output=out)
    assert back is not None and back < out  # back at its own 30 degC setpoint


def test_held_output_is_followed_not_overwritten() -> None:
    loop = _loop()
    assert loop.run(30.0, 0.1, current_output=50.0, held=20.0) is None
    assert loop.run(30.0, 0.1, current_output=20.0) == pytest.approx(20.0, abs=0.1)


def test_bad_measurement_holds_the_output() -> None:
    loop = _loop()
    out = loop.run(35.0, 0.1, current_output=50.0)
    assert loop.run(None, 0.1, current_output=50.0) == out
    assert loop.run(None, 0.1, current_output=50.0) == out


def test_automatic_setpoint_changes_are_range_checked() -> None:
    loop = _loop()
    loop.mode.set_setpoint(28.0)
    assert loop.mode.setpoint == 28.0
    with pytest.raises(ValueError, match="outside"):
        loop.mode.set_setpoint(80.0)
    assert loop.mode.setpoint == 28.0
