"""crossentropy.distillation_loss: hand-computed constants, float64 formulas, F.kl_div, properties, extremes, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import rel_entr
from scipy.special import softmax as scipy_softmax

import crossentropy as ce
from tests._support import BACKENDS, F, assert_close, requires_torch, to_backend, torch, torch_params

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "tvd")


def reference(student, teacher, divergence, *, beta=0.5, temperature=1.0, axis=-1):
    """Independent float64 formula per position: SciPy's softmax and rel_entr (0 log 0 = 0)."""
    s = np.moveaxis(np.asarray(student, dtype=np.float64), axis, -1)
    t = np.moveaxis(np.asarray(teacher, dtype=np.float64), axis, -1)
    p, q = scipy_softmax(t / temperature, axis=-1), scipy_softmax(s / temperature, axis=-1)
    if divergence == "forward_kl":
        return rel_entr(p, q).sum(-1)
    if divergence == "reverse_kl":
        return rel_entr(q, p).sum(-1)
    if divergence == "jsd":
        m = beta * p + (1 - beta) * q
        return beta * rel_entr(p, m).sum(-1) + (1 - beta) * rel_entr(q, m).sum(-1)
    return 0.5 * np.abs(p - q).sum(-1)


# --------------------------------------------------------------------------------------------
# Hand-computed constants: the 0.9/0.1 coin (teacher) against 0.7/0.3 (student)
# --------------------------------------------------------------------------------------------

COIN = {
    "forward_kl": 0.9 * math.log(0.9 / 0.7) + 0.1 * math.log(0.1 / 0.3),  # 0.1163
    "reverse_kl": 0.7 * math.log(0.7 / 0.9) + 0.3 * math.log(0.3 / 0.1),  # 0.1537
    # m = (0.8, 0.2)
    "jsd": 0.5 * (0.9 * math.log(0.9 / 0.8) + 0.1 * math.log(0.1 / 0.2))
    + 0.5 * (0.7 * math.log(0.7 / 0.8) + 0.3 * math.log(0.3 / 0.2)),
    "tvd": 0.2,
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_the_coin_gives_the_hand_computed_value(divergence, backend):
    teacher, student = np.log([0.9, 0.1]), np.log([0.7, 0.3])
    got = ce.distillation_loss(to_backend(student, backend), to_backend(teacher, backend), divergence=divergence)
    assert float(got) == pytest.approx(COIN[divergence], rel=1e-12)
    assert round(COIN["forward_kl"], 4) == 0.1163
    assert round(COIN["reverse_kl"], 4) == 0.1537


def test_jsd_weights_are_the_mixture_weights():
    teacher, student = np.log([0.9, 0.1]), np.log([0.7, 0.3])
    m = np.array([0.2 * 0.9 + 0.8 * 0.7, 0.2 * 0.1 + 0.8 * 0.3])
    expected = 0.2 * np.sum(rel_entr([0.9, 0.1], m)) + 0.8 * np.sum(rel_entr([0.7, 0.3], m))
    assert float(ce.distillation_loss(student, teacher, divergence="jsd", beta=0.2)) == pytest.approx(expected)


# --------------------------------------------------------------------------------------------
# Against an independent float64 formula, and F.kl_div where they overlap
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_divergence_equals_the_float64_formula(divergence, dtype, backend):
    rng = np.random.default_rng(1)
    student, teacher = (rng.normal(scale=3, size=(3, 5, 7)).astype(dtype) for _ in range(2))
    weight = rng.uniform(0, 2, size=(3, 7))
    for axis, temperature, beta in ((-1, 1.0, 0.5), (1, 2.5, 0.3), (0, 0.7, 0.8)):
        rows = reference(student, teacher, divergence, beta=beta, temperature=temperature, axis=axis)
        options = {"divergence": divergence, "beta": beta, "temperature": temperature, "axis": axis}
        s, t = to_backend(student, backend), to_backend(teacher, backend)
        got = ce.distillation_loss(s, t, reduction="none", **options)
        assert_close(got, rows, dtype)
        assert got.dtype == s.dtype
        assert type(got) is type(s)
        assert_close(ce.distillation_loss(s, t, reduction="sum", **options), rows.sum(), dtype)
        assert_close(ce.distillation_loss(s, t, **options), rows.mean(), dtype)
        if axis == 1:  # sample weights: the mean divides by their sum, as the losses with probability targets
            w = to_backend(weight, backend)
            assert_close(
                ce.distillation_loss(s, t, sample_weight=w, **options), (weight * rows).sum() / weight.sum(), dtype
            )
            assert_close(
                ce.distillation_loss(s, t, sample_weight=w, reduction="sum", **options), (weight * rows).sum(), dtype
            )


@requires_torch
def test_all_zero_sample_weights_give_zero_and_a_zero_gradient():
    student = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    loss = ce.distillation_loss(student, torch.randn(4, 6, dtype=torch.float64), sample_weight=torch.zeros(4))
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert not student.grad.any()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@requires_torch
def test_kl_divergences_equal_f_kl_div_with_log_targets(reduction, temperature):
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 11, dtype=torch.float64), torch.randn(8, 11, dtype=torch.float64) * 2
    log_q, log_p = F.log_softmax(student / temperature, -1), F.log_softmax(teacher / temperature, -1)
    theirs = {"mean": "batchmean", "sum": "sum", "none": "none"}[reduction]

    def kl_div(log_input, log_target):
        out = F.kl_div(log_input, log_target, log_target=True, reduction=theirs)
        return out.sum(-1) if reduction == "none" else out

    forward = ce.distillation_loss(student, teacher, temperature=temperature, reduction=reduction)
    reverse = ce.distillation_loss(
        student, teacher, temperature=temperature, reduction=reduction, divergence="reverse_kl"
    )
    assert_close(forward, kl_div(log_q, log_p), torch.float64)
    assert_close(reverse, kl_div(log_p, log_q), torch.float64)


@requires_torch
def test_gradients_equal_f_kl_div_for_student_and_teacher():
    torch.manual_seed(1)
    s, t = (torch.randn(5, 9, dtype=torch.float64, requires_grad=True) for _ in range(2))
    ours = torch.autograd.grad(ce.distillation_loss(s, t, temperature=1.5), (s, t))
    theirs = torch.autograd.grad(
        F.kl_div(F.log_softmax(s / 1.5, -1), F.log_softmax(t / 1.5, -1), log_target=True, reduction="batchmean"), (s, t)
    )
    for a, b in zip(ours, theirs, strict=True):
        assert_close(a, b, torch.float64)
    q, p = torch.softmax(s / 1.5, -1), torch.softmax(t / 1.5, -1)
    assert_close(ours[0], (q - p) / 1.5 / 5, torch.float64)  # the closed form (q - p) / T, over N


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

LOGITS = arrays(np.float64, (3, 6), elements=st.floats(-30, 30, allow_nan=False, allow_infinity=False))


@settings(max_examples=60, deadline=None)
@given(student=LOGITS, teacher=LOGITS, beta=st.floats(0.01, 0.99), temperature=st.floats(0.2, 5.0))
def test_divergences_are_non_negative_bounded_and_zero_on_equal_logits(student, teacher, beta, temperature):
    for divergence in DIVERGENCES:
        options = {"divergence": divergence, "beta": beta, "temperature": temperature, "reduction": "none"}
        rows = ce.distillation_loss(student, teacher, **options)
        assert np.all(rows >= -1e-12), (divergence, rows)
        assert np.all(ce.distillation_loss(teacher, teacher, **options) == 0.0)  # exactly: d = 0 in every term
        assert_close(rows, reference(student, teacher, divergence, beta=beta, temperature=temperature), np.float64)
    jsd = ce.distillation_loss(student, teacher, divergence="jsd", reduction="none")
    assert np.all(jsd <= math.log(2) + 1e-12)
    assert np.all(ce.distillation_loss(student, teacher, divergence="tvd", reduction="none") <= 1 + 1e-12)


@settings(max_examples=30, deadline=None)
@given(student=LOGITS, teacher=LOGITS, shift=st.floats(-1e3, 1e3))
def test_a_common_shift_of_either_logits_changes_nothing(student, teacher, shift):
    for divergence in DIVERGENCES:
        a = ce.distillation_loss(student, teacher, divergence=divergence, reduction="none")
        b = ce.distillation_loss(student + shift, teacher - shift, divergence=divergence, reduction="none")
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------------------------
# Extreme logits: ±1e4 and -inf
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", torch_params("float32", "float64"))
def test_logits_of_1e4_are_exact(dtype):
    student = torch.tensor([[1e4, -1e4, 0.0], [1e4 + 1.0, 1e4, 1e4 - 1.0]], dtype=dtype, requires_grad=True)
    teacher = torch.tensor([[-1e4, 1e4, 0.0], [1e4, 1e4 + 1.0, 1e4 - 1.0]], dtype=dtype, requires_grad=True)
    small = np.array([[1.0, 0.0, -1.0], [0.0, 1.0, -1.0]])  # the second row's logits minus 1e4
    for divergence in DIVERGENCES:
        rows = ce.distillation_loss(student, teacher, divergence=divergence, reduction="none")
        expected = reference(small[1], small[1][[1, 0, 2]], divergence)
        assert_close(rows[1], expected, dtype)
        first = {"forward_kl": 2e4, "reverse_kl": 2e4, "jsd": math.log(2), "tvd": 1.0}[divergence]
        assert float(rows[0].detach()) == pytest.approx(first, rel=1e-6)
        student.grad = teacher.grad = None
        rows.sum().backward()
        assert torch.isfinite(student.grad).all()
        assert torch.isfinite(teacher.grad).all()


@pytest.mark.parametrize("divergence", DIVERGENCES)
@requires_torch
def test_minus_inf_logits_where_both_vanish_contribute_nothing(divergence):
    """A class masked in both models (-inf logits) is as if it were absent, gradients included."""
    rng = np.random.default_rng(3)
    student, teacher = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    student[:, 2] = teacher[:, 2] = -np.inf
    keep = [0, 1, 3, 4]
    expected = reference(student[:, keep], teacher[:, keep], divergence)
    assert_close(ce.distillation_loss(student, teacher, divergence=divergence, reduction="none"), expected, np.float64)
    s, t = (torch.tensor(a, requires_grad=True) for a in (student, teacher))
    ce.distillation_loss(s, t, divergence=divergence).backward()
    s_ref, t_ref = (torch.tensor(a[:, keep], requires_grad=True) for a in (student, teacher))
    ce.distillation_loss(s_ref, t_ref, divergence=divergence).backward()
    assert_close(s.grad[:, keep], s_ref.grad, torch.float64)
    assert_close(t.grad[:, keep], t_ref.grad, torch.float64)
    assert not s.grad[:, 2].any()
    assert not t.grad[:, 2].any()


@requires_torch
def test_minus_inf_on_one_side_follows_the_math():
    """p = 0 < q: 0 in KL(p||q), +inf in KL(q||p); JSD and TVD stay finite (m > 0 wherever p or q is)."""
    teacher = np.array([0.0, 0.0, -np.inf])  # p = (1/2, 1/2, 0)
    student = np.array([0.0, 0.0, 0.0])  # q = (1/3, 1/3, 1/3)
    p, q = np.array([0.5, 0.5, 0.0]), np.full(3, 1 / 3)
    assert float(ce.distillation_loss(student, teacher)) == pytest.approx(np.sum(rel_entr(p, q)))
    assert float(ce.distillation_loss(student, teacher, divergence="reverse_kl")) == math.inf
    assert float(ce.distillation_loss(teacher, student, divergence="forward_kl")) == math.inf  # roles swapped
    m = (p + q) / 2
    jsd = 0.5 * np.sum(rel_entr(p, m)) + 0.5 * np.sum(rel_entr(q, m))
    assert float(ce.distillation_loss(student, teacher, divergence="jsd")) == pytest.approx(jsd)
    assert float(ce.distillation_loss(student, teacher, divergence="tvd")) == pytest.approx(1 / 3)
    # The finite divergences have finite gradients; an infinite one has none that means anything (not tested).
    s, t = torch.tensor(student, requires_grad=True), torch.tensor(teacher, requires_grad=True)
    for divergence in ("forward_kl", "jsd", "tvd"):
        gs, gt = torch.autograd.grad(ce.distillation_loss(s, t, divergence=divergence), (s, t))
        assert torch.isfinite(gs).all()
        assert torch.isfinite(gt).all()
    infinite = ce.distillation_loss(s, t, divergence="reverse_kl")
    assert float(infinite.detach()) == math.inf
    infinite.backward()  # runs


@requires_torch
def test_half_precision_is_computed_in_float32_and_returned_in_its_dtype():
    rng = np.random.default_rng(4)
    student, teacher = rng.normal(size=(16, 50)), rng.normal(size=(16, 50))
    for dtype in (torch.float16, torch.bfloat16):
        s, t = torch.tensor(student).to(dtype), torch.tensor(teacher).to(dtype)
        got = ce.distillation_loss(s, t, divergence="jsd")
        assert got.dtype == dtype
        assert_close(got, reference(s.double().numpy(), t.double().numpy(), "jsd").mean(), dtype)


# --------------------------------------------------------------------------------------------
# Bad arguments
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        (
            {"divergence": "kl"},
            ValueError,
            "`divergence` must be one of 'forward_kl', 'reverse_kl', 'jsd', 'tvd'; got 'kl'",
        ),
        ({"beta": 0.0}, ValueError, r"`beta` must be in \(0, 1\); got 0.0"),
        ({"beta": 1.0, "divergence": "jsd"}, ValueError, r"`beta` must be in \(0, 1\); got 1.0"),
        ({"beta": "a"}, TypeError, "`beta` must be a real number"),
        ({"temperature": 0}, ValueError, "`temperature` must be > 0; got 0.0"),
        ({"temperature": math.inf}, ValueError, "`temperature` must be > 0; got inf"),
        ({"reduction": "batchmean"}, ValueError, "`reduction` must be one of 'mean', 'sum', 'none'; got 'batchmean'"),
        ({"axis": 2}, ValueError, r"`axis` must be in \[-2, 2\)"),
        ({"sample_weight": np.ones(3)}, ValueError, r"`sample_weight` must have shape \(2,\)"),
        ({"sample_weight": -np.ones(2)}, ValueError, "`sample_weight` must be finite and non-negative"),
    ],
)
def test_bad_options_are_named(options, error, message):
    with pytest.raises(error, match=message):
        ce.distillation_loss(np.zeros((2, 3)), np.ones((2, 3)), **options)


def test_bad_arrays_are_named():
    with pytest.raises(
        ValueError, match=r"`teacher_logits` must have shape \(2, 3\) \(the shape of `student_logits`\)"
    ):
        ce.distillation_loss(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(TypeError, match="`student_logits` must be a real floating-point array; got dtype int64"):
        ce.distillation_loss(np.zeros((2, 3), dtype=np.int64), np.zeros((2, 3)))
    with pytest.raises(TypeError, match="`teacher_logits` must be a real floating-point array"):
        ce.distillation_loss(np.zeros((2, 3)), np.zeros((2, 3), dtype=bool))
    with pytest.raises(ValueError, match="`student_logits` must not be empty"):
        ce.distillation_loss(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="`student_logits` must have at least 1 dimension"):
        ce.distillation_loss(np.float64(1.0), np.float64(1.0))
    with pytest.raises(ValueError, match="`teacher_logits` must be an array, or nested lists"):
        ce.distillation_loss([[0.0, 1.0]], [[0.0], [1.0, 2.0]])


def test_probabilities_passed_as_logits_warn():
    with pytest.warns(ce.ProbabilitiesAsLogitsWarning, match="`teacher_logits` look like probabilities"):
        ce.distillation_loss(np.array([[1.0, -1.0]]), np.array([[0.9, 0.1]]))
