"""Numba EWA projection and SH colors with hand-written backward passes (float64 inside).

Same math and culling rules as ``projection.project_gaussians`` / ``projection.sh_colors``
(which stay the readable torch version the reference renderer uses); the parity tests
compare the two paths value by value and gradient by gradient. Loops run over Gaussians
in parallel with the cameras inside, so each Gaussian's gradient has a single writer.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange



_CHUNK = 256
"""Gaussians per parallel work item (scratch matrices are allocated once per item)."""


@njit(cache=True, inline="always")
def _mm(A, B, out):
    """out = A @ B for small dense matrices (no BLAS call, no allocation)."""
    for i in range(A.shape[0]):
        for j in range(B.shape[1]):
            acc = 0.0
            for k in range(A.shape[1]):
                acc += A[i, k] * B[k, j]
            out[i, j] = acc


@njit(cache=True, inline="always")
def _mm_bt(A, B, out):
    """out = A @ B^T."""
    for i in range(A.shape[0]):
        for j in range(B.shape[0]):
            acc = 0.0
            for k in range(A.shape[1]):
                acc += A[i, k] * B[j, k]
            out[i, j] = acc


@njit(cache=True, inline="always")
def _mm_at(A, B, out):
    """out = A^T @ B."""
    for i in range(A.shape[1]):
        for j in range(B.shape[1]):
            acc = 0.0
            for k in range(A.shape[0]):
                acc += A[k, i] * B[k, j]
            out[i, j] = acc


@njit(cache=True, inline="always")
def _rotmat(w, x, y, z, R):
    """Rotation matrix of a unit quaternion (w, x, y, z), written into R."""
    R[0, 0] = 1 - 2 * (y * y + z * z)
    R[0, 1] = 2 * (x * y - w * z)
    R[0, 2] = 2 * (x * z + w * y)
    R[1, 0] = 2 * (x * y + w * z)
    R[1, 1] = 1 - 2 * (x * x + z * z)
    R[1, 2] = 2 * (y * z - w * x)
    R[2, 0] = 2 * (x * z - w * y)
    R[2, 1] = 2 * (y * z + w * x)
    R[2, 2] = 1 - 2 * (x * x + y * y)


@njit(cache=True, inline="always")
def _gaussian_covariance(quat, scale, qn, R, M, Sigma):
    """Unit quaternion qn, rotation R, M = R diag(s) and Sigma = M M^T (all written)."""
    inv = 1.0 / math.sqrt(quat[0] ** 2 + quat[1] ** 2 + quat[2] ** 2 + quat[3] ** 2)
    for k in range(4):
        qn[k] = quat[k] * inv
    _rotmat(qn[0], qn[1], qn[2], qn[3], R)
    for i in range(3):
        for j in range(3):
            M[i, j] = R[i, j] * scale[j]
    _mm_bt(M, M, Sigma)


@njit(cache=True, inline="always")
def _rotate_covariance(Rv, Sigma, tmp, S):
    """S = Rv Sigma Rv^T."""
    _mm(Rv, Sigma, tmp)
    _mm_bt(tmp, Rv, S)


@njit(cache=True, inline="always")
def _jacobian(x, y, z, fx, fy, cx, cy, width, height, J):
    """EWA Jacobian written into J (x/y clamped to 1.3x the field of view); returns the
    clamped x/z, y/z and whether each was inside the clamp range."""
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_xp = (width - cx) / fx + 0.3 * tan_fovx
    lim_xn = cx / fx + 0.3 * tan_fovx
    lim_yp = (height - cy) / fy + 0.3 * tan_fovy
    lim_yn = cy / fy + 0.3 * tan_fovy
    u = x / z
    v = y / z
    u_free = -lim_xn <= u <= lim_xp
    v_free = -lim_yn <= v <= lim_yp
    u = min(max(u, -lim_xn), lim_xp)
    v = min(max(v, -lim_yn), lim_yp)
    J[0, 0] = fx / z
    J[0, 1] = 0.0
    J[0, 2] = -fx * u / z
    J[1, 0] = 0.0
    J[1, 1] = fy / z
    J[1, 2] = -fy * v / z
    return u, v, u_free, v_free


@njit(cache=True, parallel=True)
def project_forward(
    means, quats, scales, opacities,  # [N, 3], [N, 4], [N, 3], [N]
    Rvs, tvs, Ks,  # [C, 3, 3] world-to-camera rotations, [C, 3] translations, [C, 3, 3]
    width, height, near, far, eps2d,
    alpha_min, radius_max,  # ALPHA_MIN, RADIUS_MAX (arguments: the disk cache keys on this file)
    means2d, conics, depths, radii,  # written: [C, N, 2], [C, N, 3], [C, N], [C, N, 2] int32
):
    C = Rvs.shape[0]
    N = means.shape[0]
    for chunk in prange((N + _CHUNK - 1) // _CHUNK):
        qn = np.empty(4)
        R = np.empty((3, 3))
        M = np.empty((3, 3))
        Sigma = np.empty((3, 3))
        tmp = np.empty((3, 3))
        S = np.empty((3, 3))
        J = np.empty((2, 3))
        JS = np.empty((2, 3))
        cov = np.empty((2, 2))
        for n in range(chunk * _CHUNK, min(N, (chunk + 1) * _CHUNK)):
            o = opacities[n]
            _gaussian_covariance(quats[n], scales[n], qn, R, M, Sigma)
            for cam in range(C):
                means2d[cam, n, 0] = 0.0
                means2d[cam, n, 1] = 0.0
                conics[cam, n, 0] = 0.0
                conics[cam, n, 1] = 0.0
                conics[cam, n, 2] = 0.0
                depths[cam, n] = 0.0
                radii[cam, n, 0] = 0
                radii[cam, n, 1] = 0
                Rv = Rvs[cam]
                x = Rv[0, 0] * means[n, 0] + Rv[0, 1] * means[n, 1] + Rv[0, 2] * means[n, 2] + tvs[cam, 0]
                y = Rv[1, 0] * means[n, 0] + Rv[1, 1] * means[n, 1] + Rv[1, 2] * means[n, 2] + tvs[cam, 1]
                z = Rv[2, 0] * means[n, 0] + Rv[2, 1] * means[n, 1] + Rv[2, 2] * means[n, 2] + tvs[cam, 2]
                if not (z >= near and z <= far and z > 0.0) or not (o >= alpha_min):
                    continue
                fx, fy, cx, cy = Ks[cam, 0, 0], Ks[cam, 1, 1], Ks[cam, 0, 2], Ks[cam, 1, 2]
                _rotate_covariance(Rv, Sigma, tmp, S)
                _jacobian(x, y, z, fx, fy, cx, cy, width, height, J)
                _mm(J, S, JS)
                _mm_bt(JS, J, cov)
                a = cov[0, 0] + eps2d
                b = 0.5 * (cov[0, 1] + cov[1, 0])
                c = cov[1, 1] + eps2d
                det = a * c - b * b
                if not (det > 0.0) or not math.isfinite(det):
                    continue
                mx = fx * x / z + cx
                my = fy * y / z + cy
                extend = min(3.33, math.sqrt(2.0 * math.log(o / alpha_min)))
                rx = np.ceil(extend * math.sqrt(a))  # float: math.ceil would wrap past int64
                ry = np.ceil(extend * math.sqrt(c))
                if rx <= 0.0 and ry <= 0.0:
                    continue
                if mx + rx <= 0.0 or mx - rx >= width or my + ry <= 0.0 or my - ry >= height:
                    continue
                q0, q1, q2 = c / det, -b / det, a / det
                if not (math.isfinite(mx) and math.isfinite(my) and math.isfinite(q0)
                        and math.isfinite(q1) and math.isfinite(q2)):
                    continue
                means2d[cam, n, 0] = mx
                means2d[cam, n, 1] = my
                conics[cam, n, 0] = q0
                conics[cam, n, 1] = q1
                conics[cam, n, 2] = q2
                depths[cam, n] = z
                radii[cam, n, 0] = np.int32(min(rx, radius_max))  # no cap: int32 saturation only
                radii[cam, n, 1] = np.int32(min(ry, radius_max))


@njit(cache=True, parallel=True)
def project_backward(
    means, quats, scales, Rvs, tvs, Ks, width, height, eps2d,
    radii,  # [C, N, 2] from the forward (0 = culled: no gradient)
    v_means2d, v_conics, v_depths,  # [C, N, 2], [C, N, 3], [C, N]
    v_means, v_quats, v_scales,  # written: [N, 3], [N, 4], [N, 3]
):
    C = Rvs.shape[0]
    N = means.shape[0]
    for chunk in prange((N + _CHUNK - 1) // _CHUNK):
        qn = np.empty(4)
        R = np.empty((3, 3))
        M = np.empty((3, 3))
        Sigma = np.empty((3, 3))
        tmp = np.empty((3, 3))
        S = np.empty((3, 3))
        J = np.empty((2, 3))
        JS = np.empty((2, 3))
        cov = np.empty((2, 2))
        G = np.empty((2, 2))
        GJ = np.empty((2, 3))
        v_J = np.empty((2, 3))
        v_S = np.empty((3, 3))
        v_Sigma = np.empty((3, 3))
        v_M = np.empty((3, 3))
        v_R = np.empty((3, 3))
        for n in range(chunk * _CHUNK, min(N, (chunk + 1) * _CHUNK)):
            for k in range(3):
                v_means[n, k] = 0.0
                v_scales[n, k] = 0.0
            for k in range(4):
                v_quats[n, k] = 0.0
            v_M[:, :] = 0.0
            seen = False
            for cam in range(C):
                if radii[cam, n, 0] <= 0 or radii[cam, n, 1] <= 0:
                    continue
                if not seen:
                    _gaussian_covariance(quats[n], scales[n], qn, R, M, Sigma)
                    seen = True
                Rv = Rvs[cam]
                x = Rv[0, 0] * means[n, 0] + Rv[0, 1] * means[n, 1] + Rv[0, 2] * means[n, 2] + tvs[cam, 0]
                y = Rv[1, 0] * means[n, 0] + Rv[1, 1] * means[n, 1] + Rv[1, 2] * means[n, 2] + tvs[cam, 1]
                z = Rv[2, 0] * means[n, 0] + Rv[2, 1] * means[n, 1] + Rv[2, 2] * means[n, 2] + tvs[cam, 2]
                fx, fy, cx, cy = Ks[cam, 0, 0], Ks[cam, 1, 1], Ks[cam, 0, 2], Ks[cam, 1, 2]
                _rotate_covariance(Rv, Sigma, tmp, S)
                u, v, u_free, v_free = _jacobian(x, y, z, fx, fy, cx, cy, width, height, J)
                _mm(J, S, JS)
                _mm_bt(JS, J, cov)
                a = cov[0, 0] + eps2d
                b = 0.5 * (cov[0, 1] + cov[1, 0])
                c = cov[1, 1] + eps2d
                det = a * c - b * b
                d2 = det * det
                g0, g1, g2 = v_conics[cam, n, 0], v_conics[cam, n, 1], v_conics[cam, n, 2]
                # conic = (c, -b, a) / det with det = a c - b^2
                v_a = g0 * (-c * c / d2) + g1 * (b * c / d2) + g2 * (1.0 / det - a * c / d2)
                v_b = g0 * (2 * b * c / d2) + g1 * (-1.0 / det - 2 * b * b / d2) + g2 * (2 * a * b / d2)
                v_c = g0 * (1.0 / det - a * c / d2) + g1 * (a * b / d2) + g2 * (-a * a / d2)
                G[0, 0] = v_a  # dL/dcov2d, symmetric
                G[1, 1] = v_c
                G[0, 1] = 0.5 * v_b
                G[1, 0] = 0.5 * v_b
                _mm(G, JS, v_J)  # cov2d = J S J^T: dL/dJ = 2 G J S
                for i in range(2):
                    for j in range(3):
                        v_J[i, j] *= 2.0
                _mm(G, J, GJ)  # dL/dS = J^T G J
                _mm_at(J, GJ, v_S)
                _mm_at(Rv, v_S, tmp)  # dL/dSigma = Rv^T v_S Rv
                _mm(tmp, Rv, v_Sigma)
                _mm(v_Sigma, M, tmp)  # Sigma = M M^T: dL/dM = 2 v_Sigma M
                for i in range(3):
                    for j in range(3):
                        v_M[i, j] += 2.0 * tmp[i, j]
                vmx, vmy = v_means2d[cam, n, 0], v_means2d[cam, n, 1]
                zz = z * z
                v_x = vmx * fx / z
                v_y = vmy * fy / z
                v_z = -vmx * fx * x / zz - vmy * fy * y / zz + v_depths[cam, n]
                v_z += -v_J[0, 0] * fx / zz - v_J[1, 1] * fy / zz
                v_z += v_J[0, 2] * fx * u / zz + v_J[1, 2] * fy * v / zz
                if u_free:  # J02 = -fx (x / z) / z
                    v_x += -v_J[0, 2] * fx / zz
                    v_z += v_J[0, 2] * fx * x / (zz * z)
                if v_free:
                    v_y += -v_J[1, 2] * fy / zz
                    v_z += v_J[1, 2] * fy * y / (zz * z)
                for k in range(3):
                    v_means[n, k] += Rv[0, k] * v_x + Rv[1, k] * v_y + Rv[2, k] * v_z
            if not seen:
                continue  # culled in every camera
            for i in range(3):  # M = R diag(s)
                for j in range(3):
                    v_R[i, j] = v_M[i, j] * scales[n, j]
            for j in range(3):
                v_scales[n, j] = v_M[0, j] * R[0, j] + v_M[1, j] * R[1, j] + v_M[2, j] * R[2, j]
            w, x, y, z = qn[0], qn[1], qn[2], qn[3]
            vw = 2 * (x * (v_R[2, 1] - v_R[1, 2]) + y * (v_R[0, 2] - v_R[2, 0]) + z * (v_R[1, 0] - v_R[0, 1]))
            vx = 2 * (-2 * x * (v_R[1, 1] + v_R[2, 2]) + y * (v_R[1, 0] + v_R[0, 1])
                      + z * (v_R[2, 0] + v_R[0, 2]) + w * (v_R[2, 1] - v_R[1, 2]))
            vy = 2 * (x * (v_R[1, 0] + v_R[0, 1]) - 2 * y * (v_R[0, 0] + v_R[2, 2])
                      + z * (v_R[2, 1] + v_R[1, 2]) + w * (v_R[0, 2] - v_R[2, 0]))
            vz = 2 * (x * (v_R[2, 0] + v_R[0, 2]) + y * (v_R[2, 1] + v_R[1, 2])
                      - 2 * z * (v_R[0, 0] + v_R[1, 1]) + w * (v_R[1, 0] - v_R[0, 1]))
            q = quats[n]
            inv_norm = 1.0 / math.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2 + q[3] ** 2)
            dot = vw * w + vx * x + vy * y + vz * z
            v_quats[n, 0] = (vw - w * dot) * inv_norm
            v_quats[n, 1] = (vx - x * dot) * inv_norm
            v_quats[n, 2] = (vy - y * dot) * inv_norm
            v_quats[n, 3] = (vz - z * dot) * inv_norm


# Real SH constants, the same values as projection.sh_basis.
_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C20, _C21, _C22, _C23, _C24 = 1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396
_C30, _C31, _C32, _C33 = -0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154
_C34, _C35, _C36 = -0.4570457994644658, 1.445305721320277, -0.5900435899266435


@njit(cache=True, inline="always")
def _sh_basis_grad(K, x, y, z, basis, dbasis):
    """Basis values [K] and their derivatives w.r.t. (x, y, z) [K, 3] at a unit direction."""
    basis[0] = _C0
    dbasis[0, :] = 0.0
    if K > 1:
        basis[1] = -_C1 * y
        basis[2] = _C1 * z
        basis[3] = -_C1 * x
        dbasis[1:4, :] = 0.0
        dbasis[1, 1] = -_C1
        dbasis[2, 2] = _C1
        dbasis[3, 0] = -_C1
    if K > 4:
        xx, yy, zz = x * x, y * y, z * z
        basis[4] = _C20 * x * y
        basis[5] = _C21 * y * z
        basis[6] = _C22 * (2 * zz - xx - yy)
        basis[7] = _C23 * x * z
        basis[8] = _C24 * (xx - yy)
        dbasis[4, 0], dbasis[4, 1], dbasis[4, 2] = _C20 * y, _C20 * x, 0.0
        dbasis[5, 0], dbasis[5, 1], dbasis[5, 2] = 0.0, _C21 * z, _C21 * y
        dbasis[6, 0], dbasis[6, 1], dbasis[6, 2] = -2 * _C22 * x, -2 * _C22 * y, 4 * _C22 * z
        dbasis[7, 0], dbasis[7, 1], dbasis[7, 2] = _C23 * z, 0.0, _C23 * x
        dbasis[8, 0], dbasis[8, 1], dbasis[8, 2] = 2 * _C24 * x, -2 * _C24 * y, 0.0
    if K > 9:
        xx, yy, zz = x * x, y * y, z * z
        basis[9] = _C30 * y * (3 * xx - yy)
        basis[10] = _C31 * x * y * z
        basis[11] = _C32 * y * (4 * zz - xx - yy)
        basis[12] = _C33 * z * (2 * zz - 3 * xx - 3 * yy)
        basis[13] = _C34 * x * (4 * zz - xx - yy)
        basis[14] = _C35 * z * (xx - yy)
        basis[15] = _C36 * x * (xx - 3 * yy)
        dbasis[9, 0], dbasis[9, 1], dbasis[9, 2] = 6 * _C30 * x * y, _C30 * (3 * xx - 3 * yy), 0.0
        dbasis[10, 0], dbasis[10, 1], dbasis[10, 2] = _C31 * y * z, _C31 * x * z, _C31 * x * y
        dbasis[11, 0], dbasis[11, 1], dbasis[11, 2] = -2 * _C32 * x * y, _C32 * (4 * zz - xx - 3 * yy), 8 * _C32 * y * z
        dbasis[12, 0], dbasis[12, 1], dbasis[12, 2] = (
            -6 * _C33 * x * z, -6 * _C33 * y * z, _C33 * (6 * zz - 3 * xx - 3 * yy))
        dbasis[13, 0], dbasis[13, 1], dbasis[13, 2] = _C34 * (4 * zz - 3 * xx - yy), -2 * _C34 * x * y, 8 * _C34 * x * z
        dbasis[14, 0], dbasis[14, 1], dbasis[14, 2] = 2 * _C35 * x * z, -2 * _C35 * y * z, _C35 * (xx - yy)
        dbasis[15, 0], dbasis[15, 1], dbasis[15, 2] = _C36 * (3 * xx - 3 * yy), -6 * _C36 * x * y, 0.0


@njit(cache=True, parallel=True)
def sh_forward(coeffs, K, means, campos, radii, colors):
    """colors [C, N, 3] = max(sum_k basis_k(dir) coeffs[n, k] + 0.5, 0) for visible Gaussians."""
    C = campos.shape[0]
    N = means.shape[0]
    for chunk in prange((N + _CHUNK - 1) // _CHUNK):
        basis = np.empty(16)
        dbasis = np.empty((16, 3))
        for n in range(chunk * _CHUNK, min(N, (chunk + 1) * _CHUNK)):
            for cam in range(C):
                for d in range(3):
                    colors[cam, n, d] = 0.0
                if radii[cam, n, 0] <= 0 or radii[cam, n, 1] <= 0:
                    continue
                dx = means[n, 0] - campos[cam, 0]
                dy = means[n, 1] - campos[cam, 1]
                dz = means[n, 2] - campos[cam, 2]
                norm = max(math.sqrt(dx * dx + dy * dy + dz * dz), 1e-12)
                _sh_basis_grad(K, dx / norm, dy / norm, dz / norm, basis, dbasis)
                for d in range(3):
                    acc = 0.5
                    for k in range(K):
                        acc += basis[k] * coeffs[n, k, d]
                    colors[cam, n, d] = max(acc, 0.0)


@njit(cache=True, parallel=True)
def sh_backward(coeffs, K, means, campos, radii, colors, v_colors, v_coeffs, v_means):
    """Gradients to the SH coefficients [N, K', 3] and the means [N, 3] (written)."""
    C = campos.shape[0]
    N = means.shape[0]
    for chunk in prange((N + _CHUNK - 1) // _CHUNK):
        basis = np.empty(16)
        dbasis = np.empty((16, 3))
        for n in range(chunk * _CHUNK, min(N, (chunk + 1) * _CHUNK)):
            v_coeffs[n, :, :] = 0.0
            v_means[n, :] = 0.0
            for cam in range(C):
                if radii[cam, n, 0] <= 0 or radii[cam, n, 1] <= 0:
                    continue
                dx = means[n, 0] - campos[cam, 0]
                dy = means[n, 1] - campos[cam, 1]
                dz = means[n, 2] - campos[cam, 2]
                norm = max(math.sqrt(dx * dx + dy * dy + dz * dz), 1e-12)
                ux, uy, uz = dx / norm, dy / norm, dz / norm
                _sh_basis_grad(K, ux, uy, uz, basis, dbasis)
                vux = 0.0
                vuy = 0.0
                vuz = 0.0
                for d in range(3):
                    if colors[cam, n, d] <= 0.0:  # clamped at 0: no gradient
                        continue
                    g = v_colors[cam, n, d]
                    for k in range(K):
                        v_coeffs[n, k, d] += basis[k] * g
                        s = coeffs[n, k, d] * g
                        vux += dbasis[k, 0] * s
                        vuy += dbasis[k, 1] * s
                        vuz += dbasis[k, 2] * s
                dot = vux * ux + vuy * uy + vuz * uz
                v_means[n, 0] += (vux - ux * dot) / norm
                v_means[n, 1] += (vuy - uy * dot) / norm
                v_means[n, 2] += (vuz - uz * dot) / norm
