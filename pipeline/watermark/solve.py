"""Weighted least squares on a pixel grid, solved matrix-free by preconditioned conjugate gradients.

Both halves of watermark restoration reduce to one quadratic problem over an h×w grid (C independent
channels): keep u close to a target where the data are trusted, and keep its forward differences close
to given values (zero for a smoothness prior) with per-edge weights. NumPy only (no SciPy): the
operator is a handful of shifted array ops, and the grids are watermark-sized.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class GridProblem:
    """minimise Σ_p d_p (u_p − f_p)² + Σ wx (Dx u − gx)² + Σ wy (Dy u − gy)², u = f where `fixed`.

    Arrays are float64 h×w×C (weights may be h×w×1 to share them across channels); Dx u[y, x] =
    u[y, x+1] − u[y, x] (zero weight on the last column), Dy likewise along rows. `fixed` (bool h×w)
    pins u to f (a Dirichlet boundary); at least one pixel must be fixed or have d > 0.
    """

    data_weight: np.ndarray
    target: np.ndarray
    weight_x: np.ndarray
    weight_y: np.ndarray
    grad_x: np.ndarray | float = 0.0
    grad_y: np.ndarray | float = 0.0
    fixed: np.ndarray | None = None


def _dx(u: np.ndarray) -> np.ndarray:
    out = np.zeros_like(u)
    out[:, :-1] = u[:, 1:] - u[:, :-1]
    return out


def _dy(u: np.ndarray) -> np.ndarray:
    out = np.zeros_like(u)
    out[:-1] = u[1:] - u[:-1]
    return out


def _dx_t(v: np.ndarray) -> np.ndarray:
    """Adjoint of `_dx` (for v whose last column is zero)."""
    out = -v.copy()
    out[:, 1:] += v[:, :-1]
    return out


def _dy_t(v: np.ndarray) -> np.ndarray:
    out = -v.copy()
    out[1:] += v[:-1]
    return out


def solve_grid(problem: GridProblem, initial: np.ndarray | None = None, *, iterations: int = 200,
               tolerance: float = 1e-6) -> np.ndarray:
    """The minimiser of `problem` (float64 h×w×C), by Jacobi-preconditioned CG from `initial`.

    Stops after `iterations` or when the residual norm falls below `tolerance` times its start; a few
    dozen iterations suffice for the smoothing uses, where the data term dominates.
    """
    target = np.asarray(problem.target, np.float64)
    shape = target.shape
    d = np.broadcast_to(np.asarray(problem.data_weight, np.float64), shape)
    wx = np.broadcast_to(np.asarray(problem.weight_x, np.float64), shape).copy()
    wy = np.broadcast_to(np.asarray(problem.weight_y, np.float64), shape).copy()
    wx[:, -1] = 0.0
    wy[-1] = 0.0
    gx = np.broadcast_to(np.asarray(problem.grad_x, np.float64), shape)
    gy = np.broadcast_to(np.asarray(problem.grad_y, np.float64), shape)
    free = np.ones(shape[:2], bool) if problem.fixed is None else ~np.asarray(problem.fixed, bool)
    free = np.broadcast_to(free[..., None] if target.ndim == 3 else free, shape)

    def apply(u: np.ndarray) -> np.ndarray:
        return d * u + _dx_t(wx * _dx(u)) + _dy_t(wy * _dy(u))

    u = np.where(free, target if initial is None else np.asarray(initial, np.float64), target)
    rhs = d * target + _dx_t(wx * gx) + _dy_t(wy * gy)
    residual = np.where(free, rhs - apply(u), 0.0)
    diagonal = d + wx + wy
    diagonal[:, 1:] += wx[:, :-1]
    diagonal[1:] += wy[:-1]
    inverse_diagonal = np.where(free & (diagonal > 0), 1.0 / np.maximum(diagonal, 1e-12), 0.0)
    z = residual * inverse_diagonal
    direction = z.copy()
    rz = float((residual * z).sum())
    start = np.sqrt(float((residual**2).sum()))
    if start == 0.0:
        return u
    for _ in range(iterations):
        product = np.where(free, apply(direction), 0.0)
        curvature = float((direction * product).sum())
        if curvature <= 0:
            break
        step = rz / curvature
        u += step * direction
        residual -= step * product
        if np.sqrt(float((residual**2).sum())) <= tolerance * start:
            break
        z = residual * inverse_diagonal
        rz_next = float((residual * z).sum())
        direction = z + (rz_next / rz) * direction
        rz = rz_next
    return u
