// The client side of the voxsam REST API (docs/server.md): JSON requests, the propagation event stream,
// label-map blocks and packed slice masks. Nothing here knows about niivue or the page.

// A token given once in the page URL (?token=T) goes on every request; the server also sets a cookie,
// but the header keeps working when cookies are blocked.
const TOKEN = new URLSearchParams(window.location.search).get('token')

export function authHeaders (extra = {}) {
  return TOKEN ? { ...extra, Authorization: `Bearer ${TOKEN}` } : { ...extra }
}

export class ApiError extends Error {
  constructor (status, kind, message) {
    super(message)
    this.status = status
    this.kind = kind
  }
}

// Errors are JSON {error, message}; anything else (a proxy's HTML page) becomes its status line.
async function toError (res) {
  let kind = 'http'
  let message = `${res.status} ${res.statusText}`
  try {
    const body = await res.json()
    kind = body.error ?? kind
    message = body.message ?? message
  } catch { /* not JSON */ }
  return new ApiError(res.status, kind, message)
}

// One request; `body` is JSON unless it is a Blob/File (sent as the raw body, as uploads are).
async function request (method, path, body, { raw = false } = {}) {
  const init = { method, headers: authHeaders() }
  if (body instanceof Blob) {
    init.body = body
    init.headers['Content-Type'] = 'application/octet-stream'
  } else if (body !== undefined) {
    init.body = JSON.stringify(body)
    init.headers['Content-Type'] = 'application/json'
  }
  const res = await fetch(path, init)
  if (!res.ok) throw await toError(res)
  return raw ? res : res.json()
}

const S = (sid) => `/api/sessions/${encodeURIComponent(sid)}`

export const api = {
  engines: () => request('GET', '/api/engines'),
  upload: (file) => request('POST', `/api/volumes?filename=${encodeURIComponent(file.name)}`, file),
  openPath: (path) => request('POST', '/api/volumes/open', { path }),
  volume: (vid) => request('GET', `/api/volumes/${encodeURIComponent(vid)}`),
  imageUrl: (vid) => `/api/volumes/${encodeURIComponent(vid)}/image.nii.gz`,
  maskUrl: (sid) => `${S(sid)}/mask.nii.gz`,
  newSession: (volumeId, engine, options) => request('POST', '/api/sessions', { volume_id: volumeId, engine, options }),
  session: (sid) => request('GET', S(sid)),
  deleteSession: (sid) => request('DELETE', S(sid)),
  prompt: (sid, prompt) => request('POST', `${S(sid)}/prompts`, prompt),
  cancel: (sid) => request('POST', `${S(sid)}/cancel`),
  undo: (sid) => request('POST', `${S(sid)}/undo`),
  redo: (sid) => request('POST', `${S(sid)}/redo`),
  deleteObject: (sid, oid) => request('DELETE', `${S(sid)}/objects/${oid}`),
  save: (sid, format) => request('POST', `${S(sid)}/save`, { format }, { raw: true })
}

// POST /propagate answers text/event-stream; EventSource cannot POST, so read the body stream and split
// it into events ({type, data}) ourselves. Yields until the server closes the stream.
export async function * propagateEvents (sid, objectId, signal) {
  const res = await fetch(`${S(sid)}/propagate`, {
    method: 'POST',
    headers: authHeaders({ 'Content-Type': 'application/json', Accept: 'text/event-stream' }),
    body: JSON.stringify({ object_id: objectId }),
    signal
  })
  if (!res.ok) throw await toError(res)
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  try {
    for (;;) {
      const { value, done } = await reader.read()
      if (done) break
      buffer += value
      let end
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, end)
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, '')
        const event = parseEvent(block)
        if (event) yield event
      }
    }
    const last = parseEvent(buffer)
    if (last) yield last
  } finally {
    reader.cancel().catch(() => {}) // a consumer that stops early closes the stream (the server stops too)
  }
}

function parseEvent (block) {
  let type = 'message'
  const data = []
  for (const line of block.split(/\r?\n/)) {
    if (!line || line.startsWith(':')) continue // comments keep the connection alive
    const colon = line.indexOf(':')
    const field = colon < 0 ? line : line.slice(0, colon)
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '')
    if (field === 'event') type = value
    else if (field === 'data') data.push(value)
  }
  return data.length ? { type, data: JSON.parse(data.join('\n')) } : null
}

// A block of the label map, region [i0, i1, j0, j1, k0, k1] half-open (null = all), i fastest.
export async function fetchBlock (sid, region) {
  const query = region ? `?region=${region.join(',')}` : ''
  const res = await request('GET', `${S(sid)}/mask${query}`, undefined, { raw: true })
  const dtype = res.headers.get('X-Voxsam-Dtype') || 'uint8'
  let bytes = new Uint8Array(await res.arrayBuffer())
  // gzip magic: decompress ourselves, unless something on the way (Content-Encoding) already did
  if (bytes[0] === 0x1f && bytes[1] === 0x8b) {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'))
    bytes = new Uint8Array(await new Response(stream).arrayBuffer())
  }
  return dtype === 'uint16' ? new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2) : bytes
}

// A slice mask (n0 x n1, row-major, second axis fastest; truthy = inside) in the API's form:
// bits packed 8 per byte, most significant first (NumPy packbits), base64.
export function packSliceMask (values, axis, index, shape) {
  const packed = new Uint8Array(Math.ceil(values.length / 8))
  for (let n = 0; n < values.length; n++) {
    if (values[n]) packed[n >> 3] |= 0x80 >> (n & 7)
  }
  let text = ''
  for (let n = 0; n < packed.length; n += 0x8000) {
    text += String.fromCharCode.apply(null, packed.subarray(n, n + 0x8000))
  }
  return { axis, index, shape, bits: btoa(text) }
}
