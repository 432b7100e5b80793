// Where a mouse position lands in the API's voxel grid.
//
// The API speaks (i, j, k) of the volume's grid as stored in the file. niivue shows every volume resampled
// to a RAS-aligned grid, and its own `vox` (location events, frac2vox) indexes that RAS grid: for an LPS or
// flipped file it differs from the stored order. So we never use niivue's vox: we take niivue's world
// position (mm) of a point and map it through the inverse of the file's affine, which gives stored indices
// whatever the orientation.

// Inverse of a 4x4 affine given as rows (niivue's hdr.affine).
export function invertAffine (a) {
  const [[a0, a1, a2], [b0, b1, b2], [c0, c1, c2]] = a
  const det = a0 * (b1 * c2 - b2 * c1) - a1 * (b0 * c2 - b2 * c0) + a2 * (b0 * c1 - b1 * c0)
  if (!det) throw new Error('the image affine is singular')
  const m = [
    [(b1 * c2 - b2 * c1) / det, (a2 * c1 - a1 * c2) / det, (a1 * b2 - a2 * b1) / det],
    [(b2 * c0 - b0 * c2) / det, (a0 * c2 - a2 * c0) / det, (a2 * b0 - a0 * b2) / det],
    [(b0 * c1 - b1 * c0) / det, (a1 * c0 - a0 * c1) / det, (a0 * b1 - a1 * b0) / det]
  ]
  const t = [a[0][3], a[1][3], a[2][3]]
  return m.map((row) => [...row, -(row[0] * t[0] + row[1] * t[1] + row[2] * t[2])])
}

// Continuous stored-grid coordinates of a world point.
export function mmToVoxel (inverse, mm) {
  return inverse.map((r) => r[0] * mm[0] + r[1] * mm[1] + r[2] * mm[2] + r[3])
}

// The stored axis a 2D view looks along: niivue's axial view is normal to world z (S), coronal to y (A),
// sagittal to x (R); the stored axis is the one whose direction (unit column of the affine, so spacing
// does not count) points most along that world axis.
export function viewAxis (affine, axCorSag) {
  const world = [2, 1, 0][axCorSag]
  const cosines = [0, 1, 2].map((a) => Math.abs(affine[world][a]) / Math.hypot(affine[0][a], affine[1][a], affine[2][a]))
  return cosines.indexOf(Math.max(...cosines))
}

// Integer voxel inside the grid.
export function clampVoxel (v, shape) {
  return v.map((x, a) => Math.min(shape[a] - 1, Math.max(0, Math.round(x))))
}
