"""Partial information decomposition (BROJA / Liang et al. 2023 CVX estimator) on known distributions."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
from scipy.optimize import minimize

from polyfuse.data.avdigits_tasks import DIGITS, INTERACTION_TASKS
from polyfuse.reporting.interactions import decompose, joint_distribution, max_entropy_coupling, mutual_information


def gate(label: Callable[[int, int], int], values: int = 2, classes: int = 2) -> np.ndarray:
    """``P[x1, x2, y]`` with ``x1, x2`` independent uniform and ``y = label(x1, x2)``."""
    joint = np.zeros((values, values, classes))
    for a in range(values):
        for b in range(values):
            joint[a, b, label(a, b)] += 1.0
    return joint / joint.sum()


def task_joint(name: str) -> np.ndarray:
    """``P[a, b, y]`` of an AV-digits task from its digit-pair table (``redundant``: ``a = b``)."""
    task = INTERACTION_TASKS[name]
    weights = np.eye(DIGITS, dtype=np.int64) if task.weights is None else task.weights
    joint = np.zeros((DIGITS, DIGITS, task.num_classes))
    for a in range(DIGITS):
        for b in range(DIGITS):
            joint[a, b, task.label(a, b)] += weights[a, b]
    return joint / joint.sum()


def assert_identities(joint: np.ndarray) -> None:
    result = decompose(joint)
    assert result.redundancy + result.unique1 == pytest.approx(result.info1, abs=1e-6)
    assert result.redundancy + result.unique2 == pytest.approx(result.info2, abs=1e-6)
    total = result.redundancy + result.unique1 + result.unique2 + result.synergy
    assert total == pytest.approx(result.info_joint, abs=1e-6)
    assert min(result.redundancy, result.unique1, result.unique2, result.synergy) > -1e-6


def test_xor_is_synergy_copy_is_redundancy_and_one_input_is_uniqueness():
    xor = decompose(gate(lambda a, b: a ^ b))
    assert xor.synergy == pytest.approx(1.0, abs=1e-6)
    assert max(xor.redundancy, xor.unique1, xor.unique2) < 1e-6
    copy = decompose(gate(lambda a, b: a, values=4, classes=4) * np.eye(4)[:, :, None])  # X1 = X2 = Y
    assert copy.label_entropy == pytest.approx(2.0)
    assert copy.redundancy == pytest.approx(copy.label_entropy, abs=1e-6)
    assert max(copy.unique1, copy.unique2, copy.synergy) < 1e-6
    first = decompose(gate(lambda a, b: a, values=3, classes=3))  # Y = X1, X2 independent noise
    assert first.unique1 == pytest.approx(np.log2(3), abs=1e-6)
    assert max(first.redundancy, first.unique2, first.synergy) < 1e-6


def test_and_gate_matches_the_published_broja_values():
    # Bertschinger et al. 2014: AND of two fair bits has UI = 0, SI = 1/2 bit, SI + CI = H(Y) = h(1/4)
    result = decompose(gate(lambda a, b: a & b))
    assert result.synergy == pytest.approx(0.5, abs=1e-6)
    assert result.redundancy == pytest.approx(0.311278, abs=1e-6)
    assert max(result.unique1, result.unique2) < 1e-6


def test_avdigits_tasks_recover_their_designed_structure():
    bits = {name: decompose(task_joint(name)) for name in INTERACTION_TASKS}
    ten = np.log2(10)
    assert bits["redundant"].redundancy == pytest.approx(ten, abs=1e-6)
    assert bits["synergy"].synergy == pytest.approx(ten, abs=1e-6)
    assert max(bits["synergy"].redundancy, bits["synergy"].unique1, bits["synergy"].unique2) < 1e-6
    # unique: the written digit (log2 10 bits) only the image tells, the spoken parity (1 bit) only the audio
    assert bits["unique"].unique1 == pytest.approx(ten, abs=1e-6)
    assert bits["unique"].unique2 == pytest.approx(1.0, abs=1e-6)
    assert max(bits["unique"].redundancy, bits["unique"].synergy) < 1e-6
    # mixed: one bit of each kind
    mixed = bits["mixed"]
    for value in (mixed.redundancy, mixed.unique1, mixed.unique2, mixed.synergy):
        assert value == pytest.approx(1.0, abs=1e-6)
    for name in INTERACTION_TASKS:
        assert_identities(task_joint(name))


def test_identities_and_marginals_on_random_distributions():
    rng = np.random.default_rng(0)
    for shape in [(2, 3, 2), (4, 3, 3), (6, 5, 4)]:
        joint = rng.random(shape) ** 3
        joint[0, 0, :] = 0.0  # a zero pair (x1, x2)
        joint /= joint.sum()
        assert_identities(joint)
        coupling, _ = max_entropy_coupling(joint)
        np.testing.assert_allclose(coupling.sum(1), joint.sum(1), atol=1e-12)
        np.testing.assert_allclose(coupling.sum(0), joint.sum(0), atol=1e-12)
        assert coupling.min() >= 0.0


def binary_minimum_reference(joint: np.ndarray) -> float:
    """``min_{Q in Δ_P} I_Q(X1, X2; Y)`` for binary ``x1, x2``, by scipy's L-BFGS-B over the one free
    coupling entry per ``y`` (``Q(0, 0 | y)`` in its box): an independent check of the solver."""
    p1, p2, py = joint.sum(1) / joint.sum((0, 1)), joint.sum(0) / joint.sum((0, 1)), joint.sum((0, 1))

    def coupling(free: np.ndarray) -> np.ndarray:
        q = np.empty_like(joint)
        for y, a in enumerate(free):
            q[:, :, y] = py[y] * np.array([[a, p1[0, y] - a], [p2[0, y] - a, 1 - p1[0, y] - p2[0, y] + a]])
        return np.clip(q, 0.0, None)

    low = np.maximum(0.0, p1[0] + p2[0] - 1.0)
    high = np.minimum(p1[0], p2[0])
    best = np.inf
    for start in np.linspace(0.05, 0.95, 7):
        result = minimize(lambda free: mutual_information(coupling(free).reshape(4, -1)), low + start * (high - low),
                          method="L-BFGS-B", bounds=list(zip(low, high)), options={"ftol": 1e-15, "gtol": 1e-12})
        best = min(best, float(result.fun))
    return best


def test_solver_reaches_the_minimum_an_independent_solver_finds():
    rng = np.random.default_rng(1)
    for classes in (2, 3):
        joint = rng.random((2, 2, classes))
        joint /= joint.sum()
        coupling, _ = max_entropy_coupling(joint)
        ours = mutual_information(coupling.reshape(4, classes))
        reference = binary_minimum_reference(joint)
        assert ours <= reference + 1e-7
        assert ours == pytest.approx(reference, abs=1e-6)
        assert ours < mutual_information(joint.reshape(4, classes)) - 1e-3  # P itself is not the optimum


def test_joint_distribution_counts_paired_samples():
    joint = joint_distribution(np.array([0, 1, 1, 0]), np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]),
                               sizes=(2, 2, 3))
    assert joint.shape == (2, 2, 3) and joint.sum() == pytest.approx(1.0)
    assert joint[0, 1, 1] == pytest.approx(0.25) and joint[1, 0, 1] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="same non-zero length"):
        joint_distribution(np.array([0]), np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError, match="non-negative integers"):
        joint_distribution(np.array([0.5]), np.array([0]), np.array([0]))
    with pytest.raises(ValueError, match="3 axes"):
        decompose(np.ones((2, 2)))
