"""Synthetic point-cloud classification, generated in code (no download).

Ten shape classes, points sampled on each surface (or curve), then augmented per cloud:

=====  ============  ==========================================================================
label  class         before augmentation (centred at the origin, radius at most 1.1)
=====  ============  ==========================================================================
0      sphere        radius 1, uniform on the surface
1      cube          side 1.2, uniform on the six faces
2      cylinder      radius 0.6, height 1.6, lateral surface and caps by area
3      cone          base radius 0.7 at z = -0.8, apex at z = +0.8, lateral surface and base by area
4      torus         radii 0.7 and 0.25, uniform in both angles
5      pyramid       square base of side 1.3 at z = -0.6, apex at z = +0.8, faces by area
6      ellipsoid     semi-axes 1.0, 0.6, 0.35 (a sphere's points scaled per axis)
7      disc          radius 1, flat (z = 0), uniform by area
8      octahedron    ``|x| + |y| + |z| = 1`` (sphere directions projected onto it)
9      helix         three turns, radius 0.6, height 1.6 (a curve: points along it)
=====  ============  ==========================================================================

Augmentation, per cloud: a uniformly random rotation (a random unit quaternion), a scale
drawn uniformly from ``scale`` (default 0.7-1.3, the same on all axes), then Gaussian noise of
standard deviation ``noise`` (default 0.02) on every coordinate. Points are in random order.

Determinism: cloud ``i`` of class ``c`` in split ``s`` comes from its own generator
``numpy.random.default_rng([seed, s, c, i])``, so a cloud does not depend on how many others
are generated, and the same seed gives the same arrays on any machine (numpy's PCG64 and
float64 arithmetic; the arrays are returned as float32).

Default sizes (:func:`pointcloud_splits`): 1,024 points per cloud, 100 training and 30 test
clouds per class (1,000 and 300 clouds), arrays ``(N, 3, P, 1)`` float32 for
:class:`litefly.zoo.PointNetCls` and labels ``(N,)`` int64.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SHAPE_CLASSES", "sample_shape", "make_pointclouds", "pointcloud_splits", "to_pointnet_input",
           "random_rotation", "CloudAugment"]

SHAPE_CLASSES = ("sphere", "cube", "cylinder", "cone", "torus", "pyramid", "ellipsoid", "disc", "octahedron",
                 "helix")

_TRAIN, _TEST = 0, 1


def _sphere(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _choose(rng: np.random.Generator, n: int, areas: list[float]) -> np.ndarray:
    a = np.asarray(areas, float)
    return rng.choice(len(a), size=n, p=a / a.sum())


def _triangles(rng: np.random.Generator, n: int, tris: np.ndarray) -> np.ndarray:
    """Uniform by area on triangles ``(k, 3, 3)``."""
    e1, e2 = tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]
    which = _choose(rng, n, list(0.5 * np.linalg.norm(np.cross(e1, e2), axis=1)))
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    return tris[which, 0] + u[:, None] * e1[which] + v[:, None] * e2[which]


def _disc(rng: np.random.Generator, n: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    r = radius * np.sqrt(rng.random(n))
    a = rng.uniform(0, 2 * np.pi, n)
    return r * np.cos(a), r * np.sin(a)


def sample_shape(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points ``(n, 3)`` on the canonical (un-augmented) shape ``name``."""
    if name == "sphere":
        return _sphere(rng, n)
    if name == "cube":
        h = 0.6
        face = rng.integers(0, 6, n)
        pts = rng.uniform(-h, h, (n, 3))
        axis, sign = face // 2, np.where(face % 2, 1.0, -1.0)
        pts[np.arange(n), axis] = sign * h
        return pts
    if name == "cylinder":
        r, h = 0.6, 0.8
        part = _choose(rng, n, [2 * np.pi * r * 2 * h, np.pi * r * r, np.pi * r * r])
        a = rng.uniform(0, 2 * np.pi, n)
        pts = np.stack([r * np.cos(a), r * np.sin(a), rng.uniform(-h, h, n)], axis=1)
        x, y = _disc(rng, n, r)
        cap = part > 0
        pts[cap, 0], pts[cap, 1] = x[cap], y[cap]
        pts[cap, 2] = np.where(part[cap] == 1, h, -h)
        return pts
    if name == "cone":
        r, top, bottom = 0.7, 0.8, -0.8
        slant = np.hypot(r, top - bottom)
        part = _choose(rng, n, [np.pi * r * slant, np.pi * r * r])
        f = np.sqrt(rng.random(n))                # distance from the apex, uniform by area
        a = rng.uniform(0, 2 * np.pi, n)
        pts = np.stack([f * r * np.cos(a), f * r * np.sin(a), top - f * (top - bottom)], axis=1)
        x, y = _disc(rng, n, r)
        base = part == 1
        pts[base] = np.stack([x[base], y[base], np.full(base.sum(), bottom)], axis=1)
        return pts
    if name == "torus":
        big, small = 0.7, 0.25
        u, v = rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 2 * np.pi, n)
        ring = big + small * np.cos(v)
        return np.stack([ring * np.cos(u), ring * np.sin(u), small * np.sin(v)], axis=1)
    if name == "pyramid":
        h, z0, apex = 0.65, -0.6, np.array([0.0, 0.0, 0.8])
        c = np.array([[-h, -h, z0], [h, -h, z0], [h, h, z0], [-h, h, z0]])
        tris = [[c[i], c[(i + 1) % 4], apex] for i in range(4)] + [[c[0], c[1], c[2]], [c[0], c[2], c[3]]]
        return _triangles(rng, n, np.asarray(tris))
    if name == "ellipsoid":
        return _sphere(rng, n) * np.array([1.0, 0.6, 0.35])
    if name == "disc":
        x, y = _disc(rng, n, 1.0)
        return np.stack([x, y, np.zeros(n)], axis=1)
    if name == "octahedron":
        v = _sphere(rng, n)
        return v / np.abs(v).sum(axis=1, keepdims=True)
    if name == "helix":
        s = rng.random(n)
        a = 3 * 2 * np.pi * s
        return np.stack([0.6 * np.cos(a), 0.6 * np.sin(a), 1.6 * s - 0.8], axis=1)
    raise ValueError(f"unknown shape {name!r}; the classes are {', '.join(SHAPE_CLASSES)}")


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation (from a uniformly random unit quaternion)."""
    q = rng.standard_normal(4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


class CloudAugment:
    """Training-time augmentation of ``(B, 3, P, 1)`` cloud batches (torch tensors): per cloud a
    uniformly random rotation (:func:`random_rotation`), a scale drawn uniformly from ``scale``
    (the same on all axes) and Gaussian jitter of standard deviation ``jitter``. Every draw
    comes from one generator seeded by ``seed``, so a training run is reproducible. The classes
    are invariant to all three (the data are rotated and scaled at random already)."""

    def __init__(self, seed: int = 0, scale: tuple[float, float] = (0.85, 1.15), jitter: float = 0.01) -> None:
        if not 0 < scale[0] <= scale[1] or jitter < 0:
            raise ValueError(f"augment: scale={scale} must be 0 < low <= high and jitter={jitter} non-negative")
        self.rng = np.random.default_rng([seed, 0xA06])
        self.scale, self.jitter = scale, jitter

    def __call__(self, xb):
        import torch
        n = len(xb)
        rot = np.stack([random_rotation(self.rng) for _ in range(n)]) * self.rng.uniform(*self.scale, (n, 1, 1))
        noise = self.jitter * self.rng.standard_normal(xb.shape[:3])
        out = torch.einsum("bij,bjp->bip", torch.as_tensor(rot, dtype=xb.dtype), xb[..., 0])
        return (out + torch.as_tensor(noise, dtype=xb.dtype))[..., None]


def make_pointclouds(n_per_class: int = 100, num_points: int = 1024, seed: int = 0, split: int = _TRAIN,
                     noise: float = 0.02, scale: tuple[float, float] = (0.7, 1.3), rotate: bool = True,
                     classes: tuple[str, ...] = SHAPE_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """``(points (N, P, 3) float32, labels (N,) int64)``, ``N = n_per_class * len(classes)``,
    the classes interleaved (sample ``k`` has label ``k % len(classes)``)."""
    if n_per_class < 1 or num_points < 1:
        raise ValueError(f"n_per_class={n_per_class} and num_points={num_points} must be positive")
    k = len(classes)
    pts = np.empty((n_per_class * k, num_points, 3), np.float32)
    labels = np.tile(np.arange(k, dtype=np.int64), n_per_class)
    for i in range(n_per_class):
        for c, name in enumerate(classes):
            rng = np.random.default_rng([seed, split, c, i])
            p = sample_shape(name, num_points, rng)
            if rotate:
                p = p @ random_rotation(rng).T
            p = p * rng.uniform(*scale) + noise * rng.standard_normal(p.shape)
            pts[i * k + c] = rng.permutation(p)
    return pts, labels


def to_pointnet_input(points: np.ndarray) -> np.ndarray:
    """``(N, P, 3)`` points as the ``(N, 3, P, 1)`` tensor layout of :class:`litefly.zoo.PointNetCls`."""
    return np.ascontiguousarray(np.asarray(points, np.float32).transpose(0, 2, 1)[..., None])


def pointcloud_splits(n_train: int = 100, n_test: int = 30, num_points: int = 1024, seed: int = 0,
                      **kwargs) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: ``n_train``/``n_test`` clouds per class, ``x`` as
    ``(N, 3, P, 1)`` float32. The test clouds come from their own generators (never a training cloud)."""
    xtr, ytr = make_pointclouds(n_train, num_points, seed, _TRAIN, **kwargs)
    xte, yte = make_pointclouds(n_test, num_points, seed, _TEST, **kwargs)
    return to_pointnet_input(xtr), ytr, to_pointnet_input(xte), yte
