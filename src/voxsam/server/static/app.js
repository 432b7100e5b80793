// The voxsam viewer page: niivue (axial, coronal, sagittal and a 3D render) over the REST API of
// docs/server.md. This module wires the page together; see api.js (requests), coords.js (voxel
// mapping), overlay.js (the label volume), pointer.js (mouse), editing.js (prompts, propagation,
// painting) and ui.js (widgets, keys).

import { Niivue, SHOW_RENDER, MULTIPLANAR_TYPE } from './vendor/niivue.js'
import { api, authHeaders, packSliceMask } from './api.js'
import { invertAffine } from './coords.js'
import { Editor } from './editing.js'
import { Overlay } from './overlay.js'
import { attachPointer } from './pointer.js'
import * as ui from './ui.js'

const { $ } = ui

const state = {
  engines: [],
  volume: null, // volume info from the API
  session: null, // session info from the API
  affine: null, // the image's affine as niivue read it (rows), and its inverse
  inverse: null,
  objects: new Map(), // id -> {id, voxels} (voxels null: not prompted yet)
  objectId: 1,
  tool: 'prompt', // 'prompt' (click / box) or 'paint'
  brush: 2,
  erase: false,
  edits: new Map(), // painted, unapplied slices
  busy: false,
  lastEvent: null,
  maskUpdates: 0,
  propagations: 0,
  errors: [],
  started: false // the page is attached to niivue and knows the engines
}

const nv = new Niivue({
  backColor: [0.09, 0.1, 0.12, 1],
  show3Dcrosshair: true,
  crosshairColor: [1, 1, 1, 0.5], // translucent white: no object colour looks like it
  crosshairWidthUnit: 'percent', // thin at any zoom (the default is one voxel wide)
  crosshairWidth: 0.5,
  isColorbar: false,
  multiplanarShowRender: SHOW_RENDER.ALWAYS,
  multiplanarLayout: MULTIPLANAR_TYPE.GRID,
  logLevel: 'warn'
})
const overlay = new Overlay(nv)

const ctx = { nv, overlay, state, fail, changed: updateControls, mergeObjects, forgetObject }
const editor = new Editor(ctx)
let pointer = null

function fail (e) {
  console.error(e)
  const text = e?.message ?? String(e)
  state.errors.push(text)
  ui.message(text, 'error')
  updateControls()
}

// ---------------------------------------------------------------- volume and session

async function openVolume (request) {
  ui.message('opening…')
  const info = await request
  if (state.session) dropSession()
  state.edits.clear()
  state.objects = new Map()
  renderObjects()
  state.volume = info
  // niivue picks the reader from the name's extension: the server always sends NIfTI
  await nv.loadVolumes([{ url: api.imageUrl(info.volume_id), headers: authHeaders(), name: 'image.nii.gz' }])
  overlay.volume = null // loadVolumes replaced every volume
  state.affine = nv.volumes[0].hdr.affine
  state.inverse = invertAffine(state.affine)
  const dims = nv.volumes[0].hdr.dims.slice(1, 4)
  if (dims.some((n, a) => n !== info.shape[a])) throw new Error(`image grid ${dims} differs from the API's ${info.shape}`)
  const spacing = info.spacing.map((s) => +s.toFixed(2)).join('×')
  $('volume-info').textContent = [`${info.name}: ${info.shape.join('×')} voxels`, `${spacing} mm`, info.modality, info.source_format]
    .filter(Boolean).join(', ')
  fillSaveFormats(info)
  ui.message(`opened ${info.name}`)
  updateControls()
}

function fillSaveFormats (info) {
  const formats = [['nifti', 'NIfTI (.nii.gz)'], ['source', `source format (${info.source_format})`]]
  if (info.source_format === 'dicom') formats.push(['dicom-seg', 'DICOM SEG'])
  $('save-format').replaceChildren(...formats.map(([v, t]) => Object.assign(document.createElement('option'), { value: v, textContent: t })))
}

// The previous session is deleted on the server: the page shows one session at a time and the server's
// memory budget is shared.
function dropSession () {
  const sid = state.session.session_id
  state.session = null
  api.deleteSession(sid).catch(() => {}) // already evicted or gone: nothing to free
}

async function newSession () {
  const engine = state.engines.find((e) => e.name === $('engine').value)
  const info = await api.newSession(state.volume.volume_id, engine.name, readOptions())
  if (state.session) dropSession()
  state.session = info
  state.edits.clear()
  state.objects = new Map()
  mergeObjects(info.objects)
  if (!state.objects.size) state.objects.set(1, { id: 1, voxels: null })
  state.objectId = Math.min(...state.objects.keys())
  await overlay.load(api.maskUrl(info.session_id), authHeaders(), state.volume.shape)
  $('session-info').textContent = `${info.engine} session ${info.session_id.slice(0, 8)}; prompts: ${info.prompts.join(', ')}`
  ui.message(`session ready: click inside the target (${info.engine})`)
  updateControls()
}

let readOptions = () => ({})

function showEngine () {
  const engine = state.engines.find((e) => e.name === $('engine').value)
  if (!engine) return
  $('engine-summary').textContent = `${engine.summary ?? ''} · prompts: ${(engine.prompts ?? []).join(', ')}`
  readOptions = ui.buildOptionsForm($('options'), engine)
}

// ---------------------------------------------------------------- objects

function mergeObjects (objects) {
  for (const o of objects ?? []) state.objects.set(o.id, { id: o.id, voxels: o.voxels })
  renderObjects()
}

function forgetObject (id) {
  state.objects.delete(id)
  if (!state.objects.size) state.objects.set(1, { id: 1, voxels: null })
  if (!state.objects.has(state.objectId)) state.objectId = Math.min(...state.objects.keys())
  renderObjects()
}

function selectObject (id) {
  if (!state.objects.has(id)) return
  if (state.edits.size && id !== state.objectId) {
    ui.message('apply or discard the painted slices first', 'warn')
    return
  }
  state.objectId = id
  renderObjects()
}

function addObject () {
  if (!state.session) return
  const id = Math.max(0, ...state.objects.keys()) + 1
  state.objects.set(id, { id, voxels: null })
  selectObject(id)
}

function renderObjects () {
  const objects = [...state.objects.values()].sort((a, b) => a.id - b.id)
  ui.renderObjects($('objects'), objects, state.objectId, { select: selectObject, remove: (id) => editor.deleteObject(id) })
}

// ---------------------------------------------------------------- tools, save, controls

function setTool (tool) {
  state.tool = tool
  $('tool-prompt').classList.toggle('active', tool === 'prompt')
  $('tool-paint').classList.toggle('active', tool === 'paint')
  $('gl').style.cursor = tool === 'paint' ? 'cell' : 'crosshair'
}

function setBrush (radius) {
  state.brush = Math.max(0, Math.min(20, radius))
  $('brush').value = String(state.brush)
  $('brush-value').textContent = String(state.brush)
}

async function save () {
  const res = await api.save(state.session.session_id, $('save-format').value)
  const blob = await res.blob()
  const disposition = res.headers.get('Content-Disposition') ?? ''
  const match = /filename\*=UTF-8''([^;]+)|filename="?([^";]+)"?/i.exec(disposition)
  const name = match ? decodeURIComponent(match[1] ?? match[2]) : 'mask.nii.gz'
  const link = Object.assign(document.createElement('a'), { href: URL.createObjectURL(blob), download: name })
  document.body.append(link)
  link.click()
  link.remove()
  setTimeout(() => URL.revokeObjectURL(link.href), 60000)
  ui.message(`saved ${name}`)
}

function updateControls () {
  const live = Boolean(state.session)
  const idle = live && !state.busy
  $('new-session').disabled = !state.volume || state.busy
  for (const id of ['add-object', 'undo', 'redo', 'save']) $(id).disabled = !idle
  $('apply').disabled = !idle || !state.edits.size
  $('discard').disabled = !state.edits.size
}

// Escape stops what is in flight: the help panel, a propagation, a drag, then unapplied paint.
async function escape () {
  if (!$('help').hidden) { $('help').hidden = true; return }
  if (await editor.cancel()) return
  pointer?.cancel()
  if (state.edits.size) editor.discardPaint()
}

// Run an async action from a button or key, reporting its error on the page.
const guarded = (action) => (...args) => Promise.resolve().then(() => action(...args)).catch(fail)

function bindControls () {
  $('file').addEventListener('change', guarded(async () => {
    const file = $('file').files[0]
    $('file').value = '' // choosing the same file again is a new upload
    if (file) await openVolume(api.upload(file))
  }))
  $('path-form').addEventListener('submit', guarded(async (e) => {
    e.preventDefault()
    await openVolume(api.openPath($('path').value.trim()))
  }))
  $('engine').addEventListener('change', showEngine)
  $('new-session').addEventListener('click', guarded(newSession))
  $('add-object').addEventListener('click', addObject)
  $('tool-prompt').addEventListener('click', () => setTool('prompt'))
  $('tool-paint').addEventListener('click', () => setTool('paint'))
  $('brush').addEventListener('input', () => setBrush(Number($('brush').value)))
  $('erase').addEventListener('change', () => { state.erase = $('erase').checked })
  $('apply').addEventListener('click', guarded(() => editor.applyPaint()))
  $('discard').addEventListener('click', () => editor.discardPaint())
  $('undo').addEventListener('click', guarded(() => editor.undoRedo('undo')))
  $('redo').addEventListener('click', guarded(() => editor.undoRedo('redo')))
  $('save').addEventListener('click', guarded(save))
  $('cancel').addEventListener('click', guarded(() => editor.cancel()))
  $('help-button').addEventListener('click', () => { $('help').hidden = !$('help').hidden })
  $('help-close').addEventListener('click', () => { $('help').hidden = true })

  const keys = {
    z: guarded(() => editor.undoRedo('undo')),
    y: guarded(() => editor.undoRedo('redo')),
    p: () => setTool(state.tool === 'paint' ? 'prompt' : 'paint'),
    b: () => setTool('prompt'),
    e: () => { state.erase = !state.erase; $('erase').checked = state.erase },
    a: guarded(() => editor.applyPaint()),
    n: addObject,
    '[': () => setBrush(state.brush - 1),
    ']': () => setBrush(state.brush + 1),
    '?': () => { $('help').hidden = !$('help').hidden },
    Escape: guarded(escape)
  }
  for (let n = 1; n <= 9; n++) keys[String(n)] = () => selectObject(n)
  ui.bindKeys(keys)
}

// ---------------------------------------------------------------- start

// For tests and debugging: the page's state, and a way to find a stored voxel on the canvas.
window.voxsam = {
  state,
  nv,
  overlay,
  editor,
  get ready () { return state.started },
  get volumeId () { return state.volume?.volume_id ?? null },
  get sessionId () { return state.session?.session_id ?? null },
  get lastEvent () { return state.lastEvent },
  get maskUpdates () { return state.maskUpdates },
  get busy () { return state.busy },
  // Move the crosshair to stored voxel v (so every view shows its slices).
  goTo (v) {
    nv.scene.crosshairPos = nv.mm2frac(voxelToMM(v), 0, true)
    nv.drawScene()
  },
  // The current object's mask on one slice, packed as a slice_mask prompt would send it.
  sliceMask (axis, index) {
    const labels = overlay.readSlice(axis, index).map((x) => (x === state.objectId ? 1 : 0))
    return packSliceMask(labels, axis, index, overlay.sliceShape(axis))
  },
  // CSS-pixel position, relative to the canvas, of stored voxel v in the tile of view axCorSag.
  canvasPosition (v, axCorSag) {
    const hit = nv.frac2canvasPosWithTile(nv.mm2frac(voxelToMM(v), 0, true), axCorSag)
    const dpr = nv.uiData.dpr || 1
    return hit ? [hit.pos[0] / dpr, hit.pos[1] / dpr] : null
  }
}

function voxelToMM (v) {
  return state.affine.slice(0, 3).map((r) => r[0] * v[0] + r[1] * v[1] + r[2] * v[2] + r[3])
}

async function start () {
  bindControls()
  setTool('prompt')
  await nv.attachToCanvas($('gl'))
  nv.setSliceType(nv.sliceTypeMultiplanar)
  pointer = attachPointer(nv, $('gl'), $('band'), {
    tool: () => state.tool,
    click2D: (hit, shift) => editor.click2D(hit, shift),
    box2D: (a, b) => editor.box2D(a, b),
    click3D: (p, shift) => editor.click3D(p, shift),
    paint: (phase, hit, shift) => editor.paint(phase, hit, shift)
  })
  state.engines = await api.engines()
  ui.fillEngines($('engine'), state.engines)
  if (state.engines.some((e) => e.name === 'classic')) $('engine').value = 'classic'
  showEngine()
  updateControls()
  state.started = true
  ui.message('open a volume: upload a file or give a server path')
  // `voxsam serve --open FILE` (and `voxsam demo --serve`) link to the page with the volume already opened
  const preopened = new URLSearchParams(window.location.search).get('volume')
  if (preopened) {
    await openVolume(api.volume(preopened))
    await newSession()
  }
}

start().catch(fail)
