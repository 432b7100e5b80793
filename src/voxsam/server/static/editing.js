// Editing a session: prompts from clicks, boxes and painted slices, the streamed propagation, undo/redo,
// and keeping the overlay in step with the server's label map (only the blocks that changed).

import { api, fetchBlock, packSliceMask, propagateEvents, ApiError } from './api.js'
import { clampVoxel, mmToVoxel, viewAxis } from './coords.js'
import { planeAxes } from './overlay.js'
import * as ui from './ui.js'

// Slice events are gathered this long before their block is fetched: an engine that decides its slices
// all at once (classic, sam3d) streams them in one burst followed by `done`, which then brings one block,
// one overlay upload and one frame instead of several (each a full redraw: ~1 s with software GL).
const SLICE_BATCH_MS = 120

// Block fetches run one at a time, in order, so a later answer always lands after an earlier one; a request
// made while another still waits merges into it (a fast propagation's slice events become few fetches).
class BlockSync {
  constructor (ctx) {
    this.ctx = ctx
    this.tail = Promise.resolve()
    this.waiting = null
    this.batch = null // {region, timer, done, resolve}: slice regions held back for SLICE_BATCH_MS
  }

  // A region to show soon: held back with the other slices of a burst; the next request() takes it along.
  requestSoon (region) {
    if (this.batch) {
      this.batch.region = union(this.batch.region, region)
      return this.batch.done
    }
    const batch = { region }
    batch.done = new Promise((resolve) => { batch.resolve = resolve })
    batch.timer = setTimeout(() => this.flush(), SLICE_BATCH_MS)
    this.batch = batch
    return batch.done
  }

  flush () {
    const batch = this.batch
    if (!batch) return
    this.batch = null
    clearTimeout(batch.timer)
    batch.resolve(this.request(batch.region))
  }

  request (region) {
    if (this.batch) {
      const batch = this.batch
      this.batch = null
      clearTimeout(batch.timer)
      region = union(region, batch.region)
      const done = this.request(region)
      batch.resolve(done)
      return done
    }
    if (this.waiting) {
      this.waiting.region = union(this.waiting.region, region)
      return this.waiting.done
    }
    const job = { region }
    this.waiting = job
    job.done = this.tail = this.tail.then(() => this.run(job)).catch((e) => this.ctx.fail(e))
    return job.done
  }

  async run (job) {
    if (this.waiting === job) this.waiting = null
    const { state, overlay } = this.ctx
    const sid = state.session?.session_id
    if (!sid || !overlay.volume) return
    const data = await fetchBlock(sid, job.region)
    if (state.session?.session_id !== sid) return // another session started meanwhile
    overlay.writeBlock(job.region, data)
    state.maskUpdates++
  }
}

function union (a, b) {
  return a.map((v, n) => (n % 2 ? Math.max(v, b[n]) : Math.min(v, b[n])))
}

// The region of one slice: all of the grid except [index, index + 1) along `axis`.
function slab (shape, axis, index) {
  const r = [0, shape[0], 0, shape[1], 0, shape[2]]
  r[2 * axis] = index
  r[2 * axis + 1] = index + 1
  return r
}

export class Editor {
  constructor (ctx) {
    this.ctx = ctx // {nv, overlay, state, fail}
    this.sync = new BlockSync(ctx)
    this.stroke = null
  }

  get state () { return this.ctx.state }
  get shape () { return this.state.volume.shape }
  takes (kind) { return (this.state.session?.prompts ?? []).includes(kind) }

  // Stored-grid voxel (continuous) of a niivue texture fraction: through world mm, see coords.js.
  voxelOf (frac) {
    const mm = this.ctx.nv.frac2mm(frac, 0, true)
    return mmToVoxel(this.state.inverse, mm)
  }

  ready () {
    if (!this.state.session) { ui.message('open a volume and start a session first', 'warn'); return false }
    if (this.state.busy) { ui.message('a propagation is running (Esc cancels it)', 'warn'); return false }
    return true
  }

  // ---------------------------------------------------------------- prompts

  click2D (hit, negative) {
    if (!hit || !this.ready()) return
    const axis = viewAxis(this.state.affine, hit.axCorSag)
    const point = clampVoxel(this.voxelOf(hit.frac), this.shape)
    this.ctx.nv.scene.crosshairPos = hit.frac // the other views follow the click
    this.ctx.nv.drawScene()
    this.showVoxel(point)
    if (this.takes('slice_point')) return this.send([{ kind: 'point', point, positive: !negative, axis }])
    if (this.takes('point')) return this.send([{ kind: 'point', point, positive: !negative, axis: null }])
    ui.message('this engine takes no clicks', 'warn')
  }

  box2D (a, b) {
    if (!a || !b || !this.ready()) return
    const axis = viewAxis(this.state.affine, a.axCorSag)
    const p = clampVoxel(this.voxelOf(a.frac), this.shape)
    const q = clampVoxel(this.voxelOf(b.frac), this.shape)
    q[axis] = p[axis] // both corners on the slice shown
    const box = [p.map((v, n) => Math.min(v, q[n])), p.map((v, n) => Math.max(v, q[n]))]
    if (this.takes('slice_box')) return this.send([{ kind: 'box', box, axis }])
    if (this.takes('box')) return this.send([{ kind: 'box', box, axis: null }]) // a 3D box one slice thick
    ui.message('this engine takes no boxes', 'warn')
  }

  // niivue picks a 3D position only on a double-click; for a single click we borrow its depth picker,
  // which reads the rendered pixel under mousePos during the next draw and moves the crosshair there.
  click3D (p, negative) {
    if (!this.ready()) return
    if (!this.takes('point')) { ui.message('this engine takes no 3D clicks: click on a slice', 'warn'); return }
    const nv = this.ctx.nv
    const before = Array.from(nv.scene.crosshairPos)
    nv.mousePos = [p.x, p.y]
    nv.uiData.mouseDepthPicker = true
    nv.drawScene()
    nv.drawScene() // niivue draws twice after a pick: the first draw only reads the pixel
    const frac = Array.from(nv.scene.crosshairPos)
    if (frac.every((v, n) => v === before[n])) { ui.message('no surface under the click', 'warn'); return }
    const point = clampVoxel(this.voxelOf(frac), this.shape)
    this.showVoxel(point)
    return this.send([{ kind: 'point', point, positive: !negative, axis: null }])
  }

  showVoxel (v) {
    document.getElementById('location').textContent = `voxel ${v.join(', ')}`
  }

  // Queue prompts (run: false) for the current object, then stream the propagation.
  async send (prompts) {
    const sid = this.state.session.session_id
    const objectId = this.state.objectId
    try {
      for (const p of prompts) {
        await api.prompt(sid, { object_id: objectId, positive: true, ...p, run: false })
      }
      await this.propagate(objectId)
    } catch (e) {
      this.ctx.fail(e)
    }
  }

  // ---------------------------------------------------------------- propagation

  async propagate (objectId) {
    const state = this.state
    const sid = state.session.session_id
    const shape = this.shape
    let axis = null
    let decided = 0
    const progress = (text, running) => ui.showProgress({ text, running, fraction: running ? (axis === null ? 0 : decided / shape[axis]) : 1 })
    state.busy = true
    this.ctx.changed()
    ui.message('')
    progress('propagating…', true)
    try {
      for await (const event of propagateEvents(sid, objectId)) {
        state.lastEvent = event
        const d = event.data
        if (event.type === 'start') {
          axis = d.axis
        } else if (event.type === 'slice') {
          decided++
          this.sync.requestSoon(slab(shape, axis, d.index))
          progress(`object ${objectId}: ${decided} / ${shape[axis]} slices decided (axis ${axis})`, true)
        } else if (event.type === 'done') {
          if (d.region) await this.sync.request(d.region)
          else this.sync.flush() // the slices held back, if any
          await this.sync.tail
          progress(`${d.cancelled ? 'cancelled after' : 'done:'} ${d.slices ?? decided} slices`, false)
          state.propagations++
        } else if (event.type === 'error') {
          throw new ApiError(400, d.error, d.message)
        }
      }
    } finally {
      state.busy = false
      await this.refreshObjects()
      this.ctx.changed()
    }
  }

  async cancel () {
    if (!this.state.busy) return false
    try {
      await api.cancel(this.state.session.session_id)
    } catch (e) {
      this.ctx.fail(e)
    }
    return true
  }

  // ---------------------------------------------------------------- undo, redo, objects

  async undoRedo (which) {
    if (!this.ready()) return
    if (this.state.edits.size) { this.discardPaint(); return } // unapplied paint goes first
    try {
      const r = await api[which](this.state.session.session_id)
      if (!r.done) ui.message(`nothing to ${which}`, 'warn')
      if (r.region) await this.sync.request(r.region)
      this.ctx.mergeObjects(r.objects)
    } catch (e) {
      this.ctx.fail(e)
    }
  }

  async deleteObject (id) {
    if (!this.ready()) return
    try {
      const r = await api.deleteObject(this.state.session.session_id, id)
      if (r.region) await this.sync.request(r.region)
      this.ctx.mergeObjects(r.objects)
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) return this.ctx.fail(e) // 404: never prompted
    }
    this.ctx.forgetObject(id)
  }

  async refreshObjects () {
    try {
      const info = await api.session(this.state.session.session_id)
      this.state.session = info
      this.ctx.mergeObjects(info.objects)
    } catch (e) {
      this.ctx.fail(e)
    }
  }

  // ---------------------------------------------------------------- painting

  // Strokes write the current object straight into the overlay; each touched slice keeps its labels from
  // before the first stroke so that Discard (or Esc) restores it and Apply knows what changed.
  paint (phase, hit, shift) {
    const state = this.state
    if (phase === 'end' || !hit || !this.ready()) { this.stroke = null; this.ctx.changed(); return }
    const v = this.voxelOf(hit.frac)
    if (phase === 'start') {
      const axis = viewAxis(state.affine, hit.axCorSag)
      const index = clampVoxel(v, this.shape)[axis]
      const key = `${axis}:${index}`
      if (!state.edits.has(key)) {
        state.edits.set(key, { axis, index, objectId: state.objectId, before: this.ctx.overlay.readSlice(axis, index) })
      }
      this.stroke = { axis, index, last: null, erase: state.erase !== shift }
    }
    const s = this.stroke
    if (!s) return
    const [u, w] = planeAxes(s.axis)
    const to = [v[u], v[w]]
    const from = s.last ?? to
    const steps = Math.max(1, Math.ceil(2 * Math.hypot(to[0] - from[0], to[1] - from[1]))) // no gaps on fast moves
    for (let n = 1; n <= steps; n++) {
      const t = n / steps
      this.ctx.overlay.stamp(s.axis, s.index, from[0] + t * (to[0] - from[0]), from[1] + t * (to[1] - from[1]),
        state.brush, state.objectId, s.erase)
    }
    s.last = to
  }

  discardPaint () {
    for (const e of this.state.edits.values()) this.ctx.overlay.writeSlice(e.axis, e.index, e.before)
    this.state.edits.clear()
    this.ctx.changed()
  }

  // Send each painted slice, then re-propagate: as a slice mask where the engine takes one, otherwise as
  // clicks on that slice (positive inside what was added, negative inside what was removed).
  async applyPaint () {
    const state = this.state
    if (!state.edits.size || !this.ready()) return
    const edits = [...state.edits.values()]
    state.edits.clear()
    const prompts = edits.flatMap((e) => this.correction(e))
    try {
      if (prompts.length) await this.send(prompts)
    } finally {
      // the painted slices show the server's answer, whether or not it took the change
      for (const e of edits) this.sync.request(slab(this.shape, e.axis, e.index))
      await this.sync.tail
      this.ctx.changed()
    }
  }

  correction (edit) {
    const now = this.ctx.overlay.readSlice(edit.axis, edit.index)
    const id = edit.objectId
    const shape = this.ctx.overlay.sliceShape(edit.axis)
    if (this.takes('slice_mask')) {
      const inside = now.map((x) => (x === id ? 1 : 0))
      return [{ kind: 'slice_mask', mask: packSliceMask(inside, edit.axis, edit.index, shape) }]
    }
    const axis = this.takes('slice_point') ? edit.axis : null
    const clicks = []
    const added = now.map((x, n) => x === id && edit.before[n] !== id)
    const removed = now.map((x, n) => x !== id && edit.before[n] === id)
    for (const [cells, positive] of [[added, true], [removed, false]]) {
      const at = centralCell(cells, shape)
      if (!at) continue
      const point = [0, 0, 0]
      const [u, w] = planeAxes(edit.axis)
      point[edit.axis] = edit.index
      point[u] = at[0]
      point[w] = at[1]
      clicks.push({ kind: 'point', point, positive, axis })
    }
    return clicks
  }
}

// The marked cell nearest the centroid of the marked cells (so it lies inside even a curved stroke).
function centralCell (cells, [nu, nw]) {
  let count = 0; let su = 0; let sw = 0
  cells.forEach((c, n) => { if (c) { count++; su += Math.floor(n / nw); sw += n % nw } })
  if (!count) return null
  const cu = su / count
  const cw = sw / count
  let best = null
  let bestDistance = Infinity
  cells.forEach((c, n) => {
    if (!c) return
    const d = (Math.floor(n / nw) - cu) ** 2 + (n % nw - cw) ** 2
    if (d < bestDistance) { bestDistance = d; best = [Math.floor(n / nw), n % nw] }
  })
  return best
}
