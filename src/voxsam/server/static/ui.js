// Page widgets built from data: the engine picker and its options form, the object list, the progress line,
// messages, and the keyboard shortcuts. No engine is named here: everything comes from GET /api/engines.

import { objectColor } from './overlay.js'

export const $ = (id) => document.getElementById(id)

function el (tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props)
  node.append(...children)
  return node
}

// ---------------------------------------------------------------- engine options

// One form control per option, chosen from its description: choices -> select, bool -> checkbox,
// int/float -> number, anything else -> text. Types like "float | None" allow an empty field (= null).
function optionControl (opt) {
  const type = String(opt.type ?? '')
  const nullable = /None/.test(type)
  const id = `opt-${opt.name}`
  let input
  if (opt.choices && opt.choices.length) {
    input = el('select', { id })
    if (nullable) input.append(el('option', { value: '' }, '(default)'))
    for (const c of opt.choices) input.append(el('option', { value: String(c) }, String(c)))
    input.value = opt.default === null ? '' : String(opt.default)
  } else if (/\bbool\b/.test(type)) {
    input = el('input', { id, type: 'checkbox', checked: Boolean(opt.default) })
  } else if (/\b(int|float)\b/.test(type)) {
    input = el('input', { id, type: 'number', step: /\bint\b/.test(type) ? '1' : 'any', value: opt.default ?? '' })
  } else {
    input = el('input', { id, type: 'text', value: opt.default ?? '' })
  }
  const read = () => {
    if (input.type === 'checkbox') return input.checked
    if (input.value === '') return nullable ? null : input.value
    if (input.type === 'number') return Number(input.value)
    // a choice keeps the type of the listed value (choices may be numbers)
    const choice = (opt.choices ?? []).find((c) => String(c) === input.value)
    return choice !== undefined ? choice : input.value
  }
  const label = el('label', { htmlFor: id, title: opt.description ?? '' }, opt.name)
  return { row: el('div', { className: 'option' }, label, input), read }
}

// Fill `form` with the options of `engine`; returns a function giving the values that differ from the
// defaults (only those are sent, so the server's defaults stay the single source of truth).
export function buildOptionsForm (form, engine) {
  form.replaceChildren()
  const controls = (engine.options ?? []).map((opt) => ({ opt, ...optionControl(opt) }))
  for (const c of controls) form.append(c.row)
  if (!controls.length) form.append(el('p', { className: 'hint' }, 'no options'))
  return () => {
    const values = {}
    for (const { opt, read } of controls) {
      const v = read()
      if (JSON.stringify(v) !== JSON.stringify(opt.default ?? null)) values[opt.name] = v
    }
    return values
  }
}

export function fillEngines (select, engines) {
  select.replaceChildren(...engines.map((e) => el('option', { value: e.name, title: e.summary ?? '' }, e.name)))
}

// ---------------------------------------------------------------- objects

// objects: [{id, voxels}] sorted by id; the current one is highlighted.
export function renderObjects (list, objects, current, { select, remove }) {
  list.replaceChildren(...objects.map((o) => {
    const [r, g, b] = objectColor(o.id)
    const swatch = el('span', { className: 'swatch' })
    swatch.style.background = `rgb(${r}, ${g}, ${b})`
    const name = el('span', { className: 'name' }, `object ${o.id}`)
    const count = el('span', { className: 'count' }, o.voxels == null ? 'new' : `${o.voxels} vx`)
    const del = el('button', { className: 'delete', title: 'delete this object', textContent: '✕' })
    del.addEventListener('click', (e) => { e.stopPropagation(); remove(o.id) })
    const item = el('li', { className: o.id === current ? 'current' : '' }, swatch, name, count, del)
    item.dataset.objectId = String(o.id)
    item.addEventListener('click', () => select(o.id))
    return item
  }))
}

// ---------------------------------------------------------------- progress and messages

export function showProgress (p) {
  const line = $('progress')
  if (!p) { line.hidden = true; return }
  line.hidden = false
  $('progress-text').textContent = p.text
  $('progress-bar').value = p.fraction ?? 0
  $('cancel').hidden = !p.running
}

export function message (text, kind = 'info') {
  const m = $('message')
  m.textContent = text
  m.className = kind
}

// ---------------------------------------------------------------- keyboard

// Fields that take typed keys; a focused checkbox, slider or button does not, so shortcuts stay on there.
function typingIn (node) {
  if (!node) return false
  if (node.tagName === 'TEXTAREA' || node.tagName === 'SELECT') return true
  return node.tagName === 'INPUT' && /^(text|number|search|url|email|password)$/.test(node.type)
}

// key -> handler; shortcuts are off while typing in a field (except Esc).
export function bindKeys (handlers) {
  document.addEventListener('keydown', (e) => {
    const typing = typingIn(document.activeElement)
    if (e.ctrlKey || e.metaKey || e.altKey) return
    if (typing && e.key !== 'Escape') return
    const handler = handlers[e.key] ?? handlers[e.key.toLowerCase()]
    if (!handler) return
    e.preventDefault()
    handler(e)
  })
}
