// Mouse gestures on niivue's canvas, turned into voxsam actions.
//
// On the 2D tiles we take the left button ourselves (click = point, drag = box, or paint strokes), so
// niivue's own left-drag never fights us; its wheel (slice scrolling) and right-drag (contrast) stay. On the
// 3D render tile niivue keeps its rotate-on-drag, and a click without a drag becomes a 3D point.

const DRAG_CSS_PX = 4 // a press that moves less than this is a click

export function attachPointer (nv, canvas, band, actions) {
  let gesture = null

  // Canvas position in device pixels (niivue's tile geometry) and in CSS pixels (the rubber band).
  function position (e) {
    const rect = canvas.getBoundingClientRect()
    const dpr = nv.uiData.dpr || window.devicePixelRatio || 1
    const cx = e.clientX - rect.left
    const cy = e.clientY - rect.top
    return { x: cx * dpr, y: cy * dpr, cx, cy }
  }

  const moved = (a, b) => Math.hypot(a.cx - b.cx, a.cy - b.cy) > DRAG_CSS_PX

  // Where a position falls on the gesture's tile, clamped into it so a drag past its edge still counts:
  // {frac, axCorSag} with frac niivue's texture fraction, or null.
  function hit (g, p) {
    const [l, t, w, h] = nv.screenSlices[g.tile].leftTopWidthHeight
    const [x0, x1] = w < 0 ? [l + w, l] : [l, l + w]
    const x = Math.min(x1 - 0.5, Math.max(x0 + 0.5, p.x))
    const y = Math.min(t + h - 0.5, Math.max(t + 0.5, p.y))
    const frac = nv.screenXY2TextureFrac(x, y, g.tile, true)
    return frac[0] < 0 ? null : { frac, axCorSag: g.axCorSag }
  }

  function showBand (a, b) {
    Object.assign(band.style, {
      display: 'block',
      left: `${Math.min(a.cx, b.cx)}px`,
      top: `${Math.min(a.cy, b.cy)}px`,
      width: `${Math.abs(a.cx - b.cx)}px`,
      height: `${Math.abs(a.cy - b.cy)}px`
    })
  }

  function onDown (e) {
    if (e.button !== 0) return
    const p = position(e)
    const tile = nv.tileIndex(p.x, p.y)
    if (tile < 0) return
    if (nv.inRenderTile(p.x, p.y) >= 0) {
      gesture = { kind: 'render', start: p, shift: e.shiftKey } // niivue rotates; we only watch
      return
    }
    // capture phase on the canvas itself: runs before niivue's listener, which we keep out of it
    e.stopImmediatePropagation()
    e.preventDefault()
    const axCorSag = nv.screenSlices[tile].axCorSag
    gesture = { kind: actions.tool(), tile, axCorSag, start: p, moved: false, shift: e.shiftKey }
    if (gesture.kind === 'paint') actions.paint('start', hit(gesture, p), e.shiftKey)
  }

  function onMove (e) {
    if (!gesture || gesture.kind === 'render') return
    const p = position(e)
    gesture.moved = gesture.moved || moved(gesture.start, p)
    if (gesture.kind === 'paint') actions.paint('move', hit(gesture, p), e.shiftKey)
    else if (gesture.moved) showBand(gesture.start, p)
  }

  function onUp (e) {
    if (!gesture || e.button !== 0) return
    const g = gesture
    gesture = null
    band.style.display = 'none'
    const p = position(e)
    if (g.kind === 'render') {
      if (!moved(g.start, p)) actions.click3D(p, g.shift)
    } else if (g.kind === 'paint') {
      actions.paint('end')
    } else if (!g.moved) {
      actions.click2D(hit(g, g.start), g.shift)
    } else {
      actions.box2D(hit(g, g.start), hit(g, p), g.shift)
    }
  }

  // A release on the canvas that ends one of our 2D gestures stays ours too: niivue never saw its press,
  // and its mouseup listener would draw the whole scene once more (a full frame: with software GL on a
  // 256³ volume that is most of a second) just before the click draws its own.
  function onCanvasUp (e) {
    if (!gesture || gesture.kind === 'render' || e.button !== 0) return
    e.stopImmediatePropagation()
    onUp(e)
  }

  canvas.addEventListener('mousedown', onDown, { capture: true })
  canvas.addEventListener('mouseup', onCanvasUp, { capture: true })
  window.addEventListener('mousemove', onMove)
  window.addEventListener('mouseup', onUp)

  return {
    // Esc: forget a gesture in progress
    cancel () {
      gesture = null
      band.style.display = 'none'
    }
  }
}
