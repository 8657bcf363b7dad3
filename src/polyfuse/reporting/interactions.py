"""Partial information decomposition of two discrete modalities and a discrete label.

What two modalities ``X1``, ``X2`` tell about a label ``Y`` splits into redundancy ``R`` (told by
either), uniqueness ``U1`` / ``U2`` (told by one only) and synergy ``S`` (told by the pair only),
with the definitions of Bertschinger, Rauh, Olbrich, Jost & Ay, "Quantifying Unique Information"
(Entropy, 2014), used for multimodal learning by Liang et al., "Quantifying & Modeling Multimodal
Interactions: An Information Decomposition Framework" (NeurIPS 2023, the CVX estimator). With
``Δ_P`` the distributions ``Q`` having the same ``(x1, y)`` and ``(x2, y)`` marginals as ``P``::

    R  = max_{Q in Δ_P} I_Q(X1; X2; Y)          (co-information)
    U1 = min_{Q in Δ_P} I_Q(X1; Y | X2)
    U2 = min_{Q in Δ_P} I_Q(X2; Y | X1)
    S  = I_P(X1, X2; Y) - min_{Q in Δ_P} I_Q(X1, X2; Y)

All four optima are reached by one ``Q*``, the maximiser of ``H_Q(Y | X1, X2)`` over ``Δ_P``
(equivalently the minimiser of ``I_Q(X1, X2; Y)``, since ``Q(y) = P(y)``). Then
``R + U1 = I(X1; Y)``, ``R + U2 = I(X2; Y)`` and ``R + U1 + U2 + S = I(X1, X2; Y)``.

Solver (numpy + scipy, no conic solver): maximising the concave ``H_Q(Y | X1, X2)`` over the
polytope ``Δ_P`` is solved by the barrier method (Boyd & Vandenberghe, "Convex Optimization",
2004, chapter 11) on the cells ``P(x1, y) > 0 and P(x2, y) > 0`` (no other cell of a ``Q in Δ_P``
can be positive): Newton steps with the marginal constraints, where the Hessian is block diagonal
per ``(x1, x2)`` and inverted in closed form, from the strictly positive point of ``Δ_P`` where
``X1`` and ``X2`` are independent given ``Y``. The barrier weight grows until the duality-gap
bound ``cells / t`` is below ``tol`` nats; iterative proportional fitting then puts the last
rounding errors of the marginals right, so the identities hold to machine precision. (Alternating
minimisation with iterative scaling, Banerjee, Rauh & Montúfar 2018, is simpler but converges
sublinearly when ``Q*`` lies on the boundary of ``Δ_P``, as for the AND gate.)

Arrays are ``P[x1, x2, y]`` (non-negative, any sum > 0, normalised here); all values are in bits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import sparse

__all__ = ["Interactions", "decompose", "joint_distribution", "max_entropy_coupling", "mutual_information"]


@dataclass(frozen=True)
class Interactions:
    """The decomposition of ``I(X1, X2; Y)`` in bits, and the informations it splits."""

    redundancy: float
    unique1: float
    unique2: float
    synergy: float
    info1: float  # I(X1; Y)
    info2: float  # I(X2; Y)
    info_joint: float  # I(X1, X2; Y)
    label_entropy: float  # H(Y)
    iterations: int  # barrier rounds the solver used

    def as_dict(self) -> dict[str, float]:
        """The fields by name (for JSON)."""
        return asdict(self)


def _normalised(joint: np.ndarray) -> np.ndarray:
    p = np.asarray(joint, dtype=np.float64)
    if p.ndim != 3:
        raise ValueError(f"a joint distribution P[x1, x2, y] has 3 axes, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError("a joint distribution P[x1, x2, y] needs finite non-negative entries with a positive sum")
    return p / p.sum()


def _entropy(p: np.ndarray) -> float:
    nz = p[p > 0]
    return max(0.0, float(-(nz * np.log2(nz)).sum()))


def mutual_information(table: np.ndarray) -> float:
    """``I(A; B)`` in bits of a joint table ``T[a, b]`` (normalised here)."""
    t = np.asarray(table, dtype=np.float64)
    t = t / t.sum()
    return max(0.0, _entropy(t.sum(1)) + _entropy(t.sum(0)) - _entropy(t))


def _informations(q: np.ndarray) -> tuple[float, float, float]:
    """``I(X1;Y), I(X2;Y), I(X1,X2;Y)`` of ``q[x1, x2, y]``."""
    n1, n2, ny = q.shape
    return mutual_information(q.sum(1)), mutual_information(q.sum(0)), mutual_information(q.reshape(n1 * n2, ny))


def _constraints(p: np.ndarray) -> tuple[np.ndarray, sparse.csr_matrix, np.ndarray, sparse.csr_matrix]:
    """The cells ``(x1, x2, y)`` a ``Q in Δ_P`` may use (``P(x1,y) > 0`` and ``P(x2,y) > 0``; ``(n, 3)``),
    the equality system ``A q = b`` fixing both marginals (one redundant row per ``y`` dropped, so
    ``A`` has full row rank) and the ``(blocks, n)`` 0/1 matrix summing cells into their ``(x1, x2)``."""
    p1y, p2y = p.sum(1), p.sum(0)
    cells = np.argwhere((p1y[:, None, :] > 0) & (p2y[None, :, :] > 0))
    rows: dict[tuple[int, int, int], int] = {}
    targets: list[float] = []
    for y in range(p.shape[2]):
        for x1 in np.flatnonzero(p1y[:, y] > 0):
            rows[(0, int(x1), y)] = len(targets)
            targets.append(float(p1y[x1, y]))
        for x2 in np.flatnonzero(p2y[:, y] > 0)[1:]:  # the first is implied by P(y)
            rows[(1, int(x2), y)] = len(targets)
            targets.append(float(p2y[x2, y]))
    entries = [(rows[(0, int(x1), int(y))], column) for column, (x1, x2, y) in enumerate(cells)]
    entries += [(rows[(1, int(x2), int(y))], column) for column, (x1, x2, y) in enumerate(cells)
                if (1, int(x2), int(y)) in rows]
    row_index, column_index = np.asarray(entries).T
    matrix = sparse.csr_matrix((np.ones(len(entries)), (row_index, column_index)), shape=(len(targets), len(cells)))
    _, block = np.unique(cells[:, 0] * p.shape[1] + cells[:, 1], return_inverse=True)
    summing = sparse.csr_matrix((np.ones(len(cells)), (block, np.arange(len(cells)))))
    return cells, matrix, np.asarray(targets), summing


def _barrier_objective(q: np.ndarray, summing: sparse.csr_matrix, t: float) -> tuple[float, np.ndarray]:
    """``t (-H(Y | X1, X2)) - sum log q`` (nats) of the cell masses ``q > 0`` and the gradient of ``-H``,
    ``log Q(y | x1, x2)``."""
    log_conditional = np.log(q / (summing.T @ (summing @ q)))
    return t * float(q @ log_conditional) - float(np.log(q).sum()), log_conditional


def _barrier_newton(q: np.ndarray, matrix: sparse.csr_matrix, targets: np.ndarray, summing: sparse.csr_matrix,
                    t: float, max_steps: int = 200) -> np.ndarray:
    """Minimise ``t (-H(Y|X1,X2)) - sum log q`` over ``A q = b`` from a strictly positive ``q`` near
    ``Δ_P`` (Newton's method with equality constraints, Boyd & Vandenberghe 2004, sections 10.2-10.3).

    The Hessian is block diagonal per ``(x1, x2)``: ``D - (t/m) 1 1^T`` with ``D = diag(t/q + 1/q^2)``,
    inverted by Sherman-Morrison: ``H^-1 = D^-1 + D^-1 S^T diag(c) S D^-1``, ``S`` = ``summing``.
    """
    for _ in range(max_steps):
        current, log_conditional = _barrier_objective(q, summing, t)
        gradient = t * log_conditional - 1.0 / q
        inverse_diagonal = 1.0 / (t / q + 1.0 / q ** 2)
        # c = (t/m) / (1 - (t/m) sum 1/(t/q + 1/q^2)), the denominator written as (1/m) sum q/(t q + 1)
        correction = t / (summing @ (q / (t * q + 1.0)))
        spread = summing @ sparse.diags(inverse_diagonal)  # S D^-1: (blocks, n)
        rows_spread = matrix @ spread.T  # A D^-1 S^T: (rows, blocks)
        system = (matrix @ sparse.diags(inverse_diagonal) @ matrix.T
                  + rows_spread @ sparse.diags(correction) @ rows_spread.T).toarray()  # A H^-1 A^T
        solved_gradient = inverse_diagonal * gradient + spread.T @ (correction * (spread @ gradient))
        # right-hand side with b - A q: puts rounding drift back on the constraints (infeasible start)
        multipliers = np.linalg.lstsq(system, -(matrix @ solved_gradient) - (targets - matrix @ q), rcond=None)[0]
        direction = gradient + matrix.T @ multipliers
        step = -(inverse_diagonal * direction + spread.T @ (correction * (spread @ direction)))
        decrement = float(-gradient @ step)
        if decrement / 2 < 1e-12:
            break
        negative = step < 0
        size = min(1.0, 0.99 * float((-q[negative] / step[negative]).min())) if negative.any() else 1.0
        while _barrier_objective(q + size * step, summing, t)[0] > current - 0.25 * size * decrement \
                and size > 1e-16:
            size *= 0.5
        q = q + size * step
    return q


def _fit_marginals(q: np.ndarray, p: np.ndarray, sweeps: int = 100) -> np.ndarray:
    """Iterative proportional fitting of ``q[x1, x2, y]`` to ``P``'s ``(x1, y)`` and ``(x2, y)`` marginals:
    removes the solver's last rounding errors (the ``(x2, y)`` marginal is exact after each sweep)."""
    p1y, p2y = p.sum(1), p.sum(0)
    for _ in range(sweeps):
        current = q.sum(1)
        q = q * np.divide(p1y, current, out=np.zeros_like(p1y), where=current > 0)[:, None, :]
        current = q.sum(0)
        q = q * np.divide(p2y, current, out=np.zeros_like(p2y), where=current > 0)[None, :, :]
        if np.abs(q.sum(1) - p1y).max() < 1e-15:
            break
    return q


def max_entropy_coupling(joint: np.ndarray, tol: float = 1e-7) -> tuple[np.ndarray, int]:
    """``Q* = argmax_{Q in Δ_P} H_Q(Y | X1, X2)`` for ``P = joint`` ``(n1, n2, ny)``; returns ``(Q*, centring
    rounds)``. Barrier method: ``H_Q(Y|X1,X2)`` ends within ``tol`` nats of the optimum."""
    p = _normalised(joint)
    cells, matrix, targets, summing = _constraints(p)
    p1y, p2y, py = p.sum(1), p.sum(0), p.sum((0, 1))
    # start: X1 and X2 independent given Y, a strictly positive point of Δ_P on the cells
    q = p1y[cells[:, 0], cells[:, 2]] * p2y[cells[:, 1], cells[:, 2]] / py[cells[:, 2]]
    t, rounds = 1.0, 0
    while len(q) / t > tol:  # duality gap at the barrier problem's centre: (number of cells) / t
        t *= 20.0
        q = _barrier_newton(q, matrix, targets, summing, t)
        rounds += 1
    coupling = np.zeros_like(p)
    coupling[cells[:, 0], cells[:, 1], cells[:, 2]] = q
    return _fit_marginals(coupling, p), rounds


def decompose(joint: np.ndarray, tol: float = 1e-7) -> Interactions:
    """Redundancy, uniqueness and synergy (bits) of ``P[x1, x2, y] = joint`` (module docstring)."""
    p = _normalised(joint)
    q, iterations = max_entropy_coupling(p, tol)
    info1, info2, info_joint = _informations(p)
    q_info1, q_info2, q_joint = _informations(q)
    unique1 = max(0.0, q_joint - q_info2)  # I_Q(X1; Y | X2), chain rule
    unique2 = max(0.0, q_joint - q_info1)
    return Interactions(redundancy=q_info1 - unique1, unique1=unique1, unique2=unique2,
                        synergy=info_joint - q_joint, info1=info1, info2=info2, info_joint=info_joint,
                        label_entropy=_entropy(p.sum((0, 1))), iterations=iterations)


def joint_distribution(x1: np.ndarray, x2: np.ndarray, y: np.ndarray,
                       sizes: tuple[int, int, int] | None = None) -> np.ndarray:
    """Empirical ``P[x1, x2, y]`` of paired integer samples (e.g. the two unimodal models' predicted
    classes and the labels), each ``(N,)``; ``sizes`` defaults to ``max + 1`` per variable."""
    values = [np.asarray(v).reshape(-1) for v in (x1, x2, y)]
    if len({len(v) for v in values}) != 1 or not len(values[0]):
        raise ValueError(f"x1, x2 and y need the same non-zero length, got {[len(v) for v in values]}")
    for name, v in zip(("x1", "x2", "y"), values):
        if not np.issubdtype(v.dtype, np.integer) or v.min() < 0:
            raise ValueError(f"{name} must hold non-negative integers (discrete values), got dtype {v.dtype}")
    shape = sizes or tuple(int(v.max()) + 1 for v in values)
    if any(int(v.max()) >= s for v, s in zip(values, shape)):
        raise ValueError(f"values exceed sizes {shape}")
    counts = np.zeros(shape, dtype=np.float64)
    np.add.at(counts, tuple(values), 1.0)
    return counts / counts.sum()
