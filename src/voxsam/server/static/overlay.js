// The label overlay: a niivue volume on the image's stored grid whose voxel array we edit in place
// (blocks from the server, painted strokes), then hand back to the GPU.

import { NVImage } from './vendor/niivue.js'

// Object colours: saturated, far apart, readable over grey images. Object id n takes PALETTE[(n-1) % len].
const PALETTE = [
  [230, 40, 40], [40, 200, 70], [50, 120, 245], [245, 200, 30], [200, 70, 225],
  [30, 205, 210], [250, 135, 30], [160, 100, 60], [245, 120, 170], [130, 200, 40]
]
const OPACITY = 0.5

export function objectColor (id) {
  return PALETTE[(id - 1) % PALETTE.length]
}

// A discrete lookup table for values 0..255 (0 transparent), so each object id has its own colour.
function labelColormap () {
  const cm = { R: [], G: [], B: [], A: [], I: [] }
  for (let v = 0; v < 256; v++) {
    const [r, g, b] = v ? objectColor(v) : [0, 0, 0]
    cm.R.push(r); cm.G.push(g); cm.B.push(b); cm.A.push(v ? 255 : 0); cm.I.push(v)
  }
  return cm
}

// The two in-plane axes of a slice normal to `axis`, lower first (the API's slice-mask layout).
export function planeAxes (axis) {
  return [0, 1, 2].filter((a) => a !== axis)
}

export class Overlay {
  constructor (nv) {
    this.nv = nv
    this.volume = null
    this.shape = null
    this.frame = 0
  }

  get img () { return this.volume.img }

  // Load a label map (NIfTI URL on the image's grid) as the overlay, replacing the previous one.
  async load (url, headers, shape) {
    this.remove()
    const vol = await NVImage.loadFromUrl({ url, headers, name: 'mask.nii.gz', opacity: OPACITY })
    const dims = vol.hdr.dims.slice(1, 4)
    if (dims.some((n, a) => n !== shape[a])) {
      throw new Error(`the mask grid ${dims} differs from the volume grid ${shape}`)
    }
    // niivue draws a volume through its label lookup table only when the header says "label" (1002);
    // set both before adding it, so the GPU upload happens once
    vol.hdr.intent_code = 1002
    vol.setColormapLabel(labelColormap())
    this.volume = vol
    this.shape = shape
    this.nv.addVolume(vol)
  }

  remove () {
    if (this.volume && this.nv.volumes.includes(this.volume)) this.nv.removeVolume(this.volume)
    this.volume = null
  }

  // Write a block (region [i0, i1, j0, j1, k0, k1], data i fastest) into the voxel array.
  writeBlock (region, data) {
    const [i0, i1, j0, j1, k0, k1] = region
    const [X, Y] = this.shape
    const nx = i1 - i0
    if (data.length !== nx * (j1 - j0) * (k1 - k0)) {
      throw new Error(`mask block of ${data.length} voxels does not fill region ${region}`)
    }
    this.widenFor(data)
    let src = 0
    for (let k = k0; k < k1; k++) {
      for (let j = j0; j < j1; j++) {
        this.img.set(data.subarray(src, src + nx), i0 + X * (j + Y * k))
        src += nx
      }
    }
    this.refresh()
  }

  // Past 255 objects the server sends uint16: widen the overlay's array once, keeping its voxels.
  widenFor (data) {
    if (!(data instanceof Uint16Array) || this.img instanceof Uint16Array) return
    this.volume.img = Uint16Array.from(this.img)
    this.volume.hdr.datatypeCode = 512 // NIfTI DT_UINT16
    this.volume.hdr.numBitsPerVoxel = 16
  }

  // GPU upload is the expensive part: do it at most once per animation frame, and only for this layer.
  // niivue's updateGLVolume re-uploads every volume (the image too: ~20x the cost for a 256³ CT); when
  // the overlay is niivue's layer 1 (image + overlay, as this page sets up) refreshing that layer and
  // redrawing is enough. refreshLayers is niivue-internal: checked against the vendored 0.69.0.
  refresh () {
    if (this.frame) return
    this.frame = requestAnimationFrame(() => {
      this.frame = 0
      const nv = this.nv
      if (nv.volumes.length === 2 && nv.volumes[1] === this.volume) {
        nv.refreshLayers(this.volume, 1)
        nv.drawScene()
      } else {
        nv.updateGLVolume()
      }
    })
  }

  flatIndex (v) {
    return v[0] + this.shape[0] * (v[1] + this.shape[1] * v[2])
  }

  sliceShape (axis) {
    return planeAxes(axis).map((a) => this.shape[a])
  }

  // A copy of one slice's labels, row-major over the two in-plane axes (second fastest).
  readSlice (axis, index) {
    const [u, w] = planeAxes(axis)
    const [nu, nw] = this.sliceShape(axis)
    const out = new this.img.constructor(nu * nw)
    const v = [0, 0, 0]
    v[axis] = index
    for (let a = 0; a < nu; a++) {
      for (let b = 0; b < nw; b++) {
        v[u] = a; v[w] = b
        out[a * nw + b] = this.img[this.flatIndex(v)]
      }
    }
    return out
  }

  writeSlice (axis, index, values) {
    const [u, w] = planeAxes(axis)
    const [nu, nw] = this.sliceShape(axis)
    const v = [0, 0, 0]
    v[axis] = index
    for (let a = 0; a < nu; a++) {
      for (let b = 0; b < nw; b++) {
        v[u] = a; v[w] = b
        this.img[this.flatIndex(v)] = values[a * nw + b]
      }
    }
    this.refresh()
  }

  // Paint (or erase) a disk of `radius` voxels centred at in-plane (cu, cw) on one slice. Erasing clears
  // only the current object's voxels, so another object is never cut by accident.
  stamp (axis, index, cu, cw, radius, objectId, erase) {
    const [u, w] = planeAxes(axis)
    const [nu, nw] = this.sliceShape(axis)
    const r = Math.max(0, Math.round(radius))
    const v = [0, 0, 0]
    v[axis] = index
    for (let du = -r; du <= r; du++) {
      for (let dw = -r; dw <= r; dw++) {
        const a = Math.round(cu) + du
        const b = Math.round(cw) + dw
        if (du * du + dw * dw > r * r || a < 0 || b < 0 || a >= nu || b >= nw) continue
        v[u] = a; v[w] = b
        const n = this.flatIndex(v)
        if (!erase) this.img[n] = objectId
        else if (this.img[n] === objectId) this.img[n] = 0
      }
    }
    this.refresh()
  }
}
