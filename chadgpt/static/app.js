// The chadgpt web page: a thin client of the REST API (no build step, no dependencies).
'use strict';
const $ = (id) => document.getElementById(id);
const state = { rules: {}, keys: [], model: null, poll: null, batch: [], source: null };

// ---- talking to the API -------------------------------------------------------------------------------
function keyHeaders() {
  const key = $('api-key').value;
  return key ? { 'X-API-Key': key } : {};
}
async function failure(r) {  // the server's sentence for a failed response, else its status line
  let data = null;
  try { data = await r.json(); } catch (e) { /* not JSON */ }
  return new Error((data && data.detail) || `${r.status} ${r.statusText}`);
}
async function api(method, path, body) {
  const headers = keyHeaders();
  const init = { method, headers };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) { headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
  const r = await fetch(path, init);
  if (!r.ok) throw await failure(r);
  return r.json();
}
function say(id, text, error = false) { const el = $(id); el.textContent = text; el.classList.toggle('error', error); }
const enc = encodeURIComponent;

// ---- datasets -----------------------------------------------------------------------------------------
async function loadDatasets(select) {
  const names = await api('GET', 'ds');
  const sel = $('dataset');
  const keep = select || sel.value;
  sel.replaceChildren(...names.map((n) => new Option(n, n)));
  if (names.includes(keep)) sel.value = keep;
  showDatasetInfo();
}
async function showDatasetInfo() {  // Delete shows only where it can work: never beside a built-in
  const name = $('dataset').value;
  $('delete-dataset').hidden = true;
  if (!name) return;
  try {
    const d = await api('GET', `ds/${enc(name)}`);
    $('dataset-info').textContent = d.characters == null ? `${d.bytes.toLocaleString()} bytes (downloaded on first use)`
      : `${d.characters.toLocaleString()} characters, vocabulary of ${d.vocab_size}`;
    $('delete-dataset').hidden = d.builtin;
  } catch (e) {   // an unreadable upload (not UTF-8, say) can still be deleted
    $('dataset-info').textContent = e.message;
    $('delete-dataset').hidden = $('dataset').value !== name;
  }
}
$('dataset').addEventListener('change', showDatasetInfo);
$('upload-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const file = $('upload-file').files[0];
  if (!file) return say('data-message', 'choose a text file first', true);
  const form = new FormData();
  form.append('file', file);
  const name = $('upload-name').value.trim() || file.name;
  form.append('name', name);
  form.append('overwrite', $('upload-overwrite').checked ? 'true' : 'false');
  $('upload-button').disabled = true;
  try {
    const r = await api('POST', 'ds/upload', form);
    say('data-message', r.message);
    await loadDatasets(name);
  } catch (e) { say('data-message', e.message, true); }
  finally { $('upload-button').disabled = false; }
});
$('delete-dataset').addEventListener('click', async () => {
  const name = $('dataset').value;
  if (!name || !confirm(`Delete dataset ${name}?`)) return;
  try { say('data-message', (await api('DELETE', `ds/${enc(name)}`)).message); await loadDatasets(); }
  catch (e) { say('data-message', e.message, true); }
});

// ---- hyperparameters: every setting, its label, range, choices and default come from the API's own schema ----
function settingControl(k, p) {  // an input for a number, a select for a choice or a switch ('' keeps the preset's)
  const t = (p.anyOf || [p]).find((x) => x.type && x.type !== 'null') || {};
  const example = (p.examples || [''])[0];
  let input;
  if (t.enum || t.type === 'boolean') {
    input = document.createElement('select');
    const values = t.enum || [true, false];
    const word = (v) => (v === true ? 'on' : v === false ? 'off' : String(v));
    input.append(new Option(example === '' || example === null ? 'preset' : `preset (${word(example)})`, ''),
                 ...values.map((v) => new Option(word(v), String(v))));
    state.rules[k] = { choice: true, boolean: t.type === 'boolean' };
  } else {
    const bpe = k === 'vocab_size';   // the size of a BPE trained on the dataset: its own range
    const rule = { integer: t.type === 'integer', min: bpe ? p['x-bpe-min'] : t.minimum, max: bpe ? p['x-bpe-max'] : t.maximum,
                   xmin: t.exclusiveMinimum, xmax: t.exclusiveMaximum, required: bpe || !!p['x-basic'] };
    input = document.createElement('input');
    Object.assign(input, { type: 'number', step: rule.integer ? 1 : 'any' });   // x-step from a min of 1 would mark 64 invalid
    if (rule.required) input.value = example; else input.placeholder = example === null ? 'unset' : `preset (${example})`;
    if (rule.min !== undefined) input.min = rule.min;
    if (rule.max !== undefined) input.max = rule.max;
    state.rules[k] = rule;
  }
  input.id = `hp-${k}`;
  input.addEventListener(input.tagName === 'SELECT' ? 'change' : 'input', validate);
  const label = document.createElement('label'), name = document.createElement('span'), code = document.createElement('code');
  label.id = `hp-label-${k}`; label.title = p.description || ''; code.textContent = k;
  name.append(p.title || k, ' ', code);
  label.append(name, input);
  return label;
}
async function buildControls() {
  const spec = await api('GET', 'openapi.json');
  const props = spec.components.schemas.Hyperparameters.properties;
  for (const [k, p] of Object.entries(props)) {
    if (k === 'arch') continue;   // the architecture has its own select
    state.keys.push(k);
    $(k === 'vocab_size' || p['x-basic'] ? 'hyperparameters' : 'more-hyperparameters').append(settingControl(k, p));
  }
  $('tokenizer').addEventListener('change', showVocabSize);
  showVocabSize();
  validate();
}
function showVocabSize() {  // the vocabulary size is chosen only for a BPE trained on the dataset
  const bpe = $('tokenizer').value === 'bpe';
  $('hp-label-vocab_size').hidden = !bpe; $('hp-vocab_size').disabled = !bpe;
  validate();
}
function hyperparameters() {  // the settings given: a blank or 'preset' one is left to the preset
  const out = {};
  for (const k of state.keys) {
    const input = $(`hp-${k}`), v = input.value, r = state.rules[k];
    if (v === '' || input.disabled) continue;
    out[k] = r.choice ? (r.boolean ? v === 'true' : v) : Number(v);
  }
  return out;
}
function validate() {  // the same rules the server applies; it checks again anyway
  const errors = [];
  const hp = hyperparameters();
  for (const k of state.keys) {
    const r = state.rules[k], v = hp[k], input = $(`hp-${k}`);
    let bad = null;
    if (input.disabled || r.choice) continue;
    if (v === undefined) { if (r.required) bad = `${k} is required`; }
    else if (Number.isNaN(v)) bad = `${k} must be a number`;
    else if (r.integer && !Number.isInteger(v)) bad = `${k} must be a whole number`;
    else if (r.min !== undefined && v < r.min) bad = `${k} must be at least ${r.min}`;
    else if (r.xmin !== undefined && v <= r.xmin) bad = `${k} must be greater than ${r.xmin}`;
    else if (r.max !== undefined && v > r.max) bad = `${k} must be at most ${r.max}`;
    else if (r.xmax !== undefined && v >= r.xmax) bad = `${k} must be less than ${r.xmax}`;
    input.classList.toggle('invalid', !!bad);
    if (bad) errors.push(bad);
  }
  if (!errors.length && hp.n_embed % hp.n_head) errors.push(`n_embed (${hp.n_embed}) must be divisible by n_head (${hp.n_head})`);
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/.test($('model-name').value) || $('model-name').value.includes('..'))
    errors.push("model name: up to 64 letters, digits, '-', '_' or '.', not starting with '.'");
  say('train-message', errors.join('; '), errors.length > 0);
  $('train-button').disabled = errors.length > 0 || training();
  return errors.length === 0;
}
$('model-name').addEventListener('input', validate);
const training = () => state.status && ['queued', 'running'].includes(state.status.state);

// ---- training -----------------------------------------------------------------------------------------
$('train-button').addEventListener('click', async () => {
  if (!validate()) return;
  const name = $('model-name').value;
  const resume = $('resume').checked;   // a resumed model keeps its own tokenizer
  const hp = resume ? hyperparameters() : { arch: $('arch').value, ...hyperparameters() };   // resuming keeps its own
  const body = { dataset: $('dataset').value, hyperparameters: hp, resume,
                 ...(resume ? {} : { tokenizer: $('tokenizer').value }) };
  $('train-button').disabled = true;
  try {
    state.status = await api('POST', `lm/${enc(name)}/train`, body);
    state.model = name; state.batch = [];
    say('train-message', `training ${name} on ${body.dataset}`);
    $('cancel-button').disabled = false;
    watch(name);
  } catch (e) { validate(); say('train-message', e.message, true); }   // the server's reason stays in view
});
$('cancel-button').addEventListener('click', async () => {
  $('cancel-button').disabled = true;
  say('train-message', 'stopping after this step...');
  try { await api('POST', `lm/${enc(state.model)}/cancel`); } catch (e) { say('train-message', e.message, true); }
});
function fmt(x, digits = 3) { return x == null ? '–' : Number(x).toFixed(digits); }
function watch(name) {
  clearTimeout(state.poll);
  const tick = async () => {
    let st;
    try { st = await api('GET', `lm/${enc(name)}/status`); } catch (e) { say('train-message', e.message, true); return; }
    state.status = st;
    if (st.loss != null && (!state.batch.length || state.batch[state.batch.length - 1][0] !== st.step)) state.batch.push([st.step, st.loss]);
    $('progress').max = st.max_iters || 1; $('progress').value = st.step;
    const eta = st.eta_s == null ? '–' : st.eta_s < 120 ? `${st.eta_s.toFixed(0)} s` : `${(st.eta_s / 60).toFixed(1)} min`;
    $('train-status').textContent = `${st.state} · step ${st.step}/${st.max_iters} · loss ${fmt(st.loss)} · val ${fmt(st.val_loss)} (${fmt(st.val_bpb)} bits/byte)`
      + ` · ${st.tokens_per_s == null ? '–' : Math.round(st.tokens_per_s).toLocaleString()} tokens/s · ETA ${eta}`;
    try { drawChart((await api('GET', `lm/${enc(name)}`)).metrics); } catch (e) { /* model folder not written yet */ }
    if (['queued', 'running'].includes(st.state)) { state.poll = setTimeout(tick, 700); return; }
    $('cancel-button').disabled = true;
    validate();
    say('train-message', st.state === 'done' ? `done: ${name} trained to step ${st.step}`
      : st.state === 'cancelled' ? `stopped at step ${st.step}; the checkpoint is saved` : `failed: ${st.error}`, st.state === 'failed');
    loadModels(name);
  };
  tick();
}

// ---- the loss chart (SVG) -----------------------------------------------------------------------------
function drawChart(metrics) {
  const svg = $('loss-chart'), W = 600, H = 260, L = 48, R = 12, T = 14, B = 30;
  const series = { batch: state.batch, train: metrics.map((m) => [m.step, m.train_loss]), val: metrics.map((m) => [m.step, m.val_loss]) };
  const all = [...series.batch, ...series.train, ...series.val];
  svg.toggleAttribute('hidden', !all.length);   // no empty box before the first point
  if (!all.length) { svg.innerHTML = ''; return; }
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const x0 = 0, x1 = Math.max(1, ...xs), y0 = Math.min(...ys) * 0.95, y1 = Math.max(...ys) * 1.02;
  const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R), sy = (y) => H - B - (y - y0) / ((y1 - y0) || 1) * (H - T - B);
  const path = (pts) => pts.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(' ');
  let s = `<line class="axis" x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}"/><line class="axis" x1="${L}" y1="${T}" x2="${L}" y2="${H - B}"/>`;
  for (let i = 0; i <= 4; i++) {
    const y = y0 + (y1 - y0) * i / 4, x = x0 + (x1 - x0) * i / 4;
    s += `<text x="${L - 6}" y="${sy(y) + 4}" text-anchor="end">${y.toFixed(2)}</text>`;
    s += `<text x="${sx(x)}" y="${H - B + 16}" text-anchor="middle">${Math.round(x)}</text>`;
  }
  for (const k of ['batch', 'train', 'val']) {
    if (!series[k].length) continue;
    s += `<polyline class="${k}" points="${path(series[k])}"/>`;
    if (k !== 'batch') s += series[k].map((p) => `<circle class="${k}" r="3" cx="${sx(p[0]).toFixed(1)}" cy="${sy(p[1]).toFixed(1)}"/>`).join('');
  }
  s += `<text x="${W - R}" y="${T + 6}" text-anchor="end">— train (blue) · val (orange) · batch (light)</text>`;
  svg.innerHTML = s;
}

// ---- models -------------------------------------------------------------------------------------------
async function loadModels(select) {
  const names = await api('GET', 'lm');
  const rows = await Promise.all(names.map(async (n) => {   // each model's info: its status, and whether it chats
    try { const info = await api('GET', `lm/${enc(n)}`); return [n, info.status, info.tokenizer]; }
    catch (e) { return [n, { state: '?', step: '' }, null]; }
  }));
  const sel = $('gen-model'), keep = select || sel.value;
  sel.replaceChildren(...names.map((n) => new Option(n, n)));
  if (names.includes(keep)) sel.value = keep;
  fillSelect('sft-base', names);
  fillSelect('chat-model', names.filter((n) => isChat(rows, n)));
  $('model-list').replaceChildren(...rows.map(([n, st]) => {
    const tr = document.createElement('tr');
    tr.dataset.name = n;
    for (const v of [n, st.state, st.step, fmt(st.val_loss), fmt(st.val_bpb)]) { const td = document.createElement('td'); td.textContent = v; tr.append(td); }
    const td = document.createElement('td'), del = document.createElement('button');
    del.textContent = 'Delete'; del.className = 'danger';
    del.addEventListener('click', async (ev) => {
      ev.stopPropagation();
      if (!confirm(`Delete model ${n}?`)) return;
      try { await api('DELETE', `lm/${enc(n)}`); loadModels(); } catch (e) { alert(e.message); }
    });
    td.append(del); tr.append(td);
    tr.addEventListener('click', () => { sel.value = n; $('model-name').value = n; validate(); });
    return tr;
  }));
}

function isChat(rows, name) {   // a chat model's tokenizer has the chat format's special tokens
  const row = rows.find((r) => r[0] === name);
  return !!(row && row[2] && (row[2].specials || []).includes('<|assistant_end|>'));
}
function fillSelect(id, names) {
  const sel = $(id), keep = sel.value;
  sel.replaceChildren(...names.map((n) => new Option(n, n)));
  if (names.includes(keep)) sel.value = keep;
}

// ---- fine-tuning to chat: a job like training, watched the same way ----------------------------------
async function loadConversationSets() {
  const names = (await api('GET', 'ds')).filter((n) => n !== 'shakespeare' && n !== 'shakespeare-chat.jsonl');
  fillSelect('sft-data', ['shakespeare-chat', ...names]);
}
$('sft').addEventListener('toggle', () => { if ($('sft').open) loadConversationSets().catch((e) => say('train-message', e.message, true)); });
$('sft-button').addEventListener('click', async () => {
  const name = $('model-name').value, base = $('sft-base').value;
  if (!base) return say('train-message', 'train a model first: fine-tuning starts from one', true);
  const body = { base, dataset: $('sft-data').value,
                 hyperparameters: { max_iters: Number($('sft-steps').value), learning_rate: Number($('sft-lr').value) } };
  $('sft-button').disabled = true;
  try {
    state.status = await api('POST', `lm/${enc(name)}/sft`, body);
    state.model = name; state.batch = [];
    say('train-message', `fine-tuning ${base} on ${body.dataset} as ${name}`);
    $('cancel-button').disabled = false;
    watch(name);
  } catch (e) { say('train-message', e.message, true); }
  finally { $('sft-button').disabled = false; }
});

// ---- generation, streamed with Server-Sent Events -----------------------------------------------------
// fetch rather than EventSource: it can send the API key (a server may require it for reads) and shows
// the server's error message, and stopping is an abort.
async function* sseEvents(response) {
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end); buffer = buffer.slice(end + 2);
      let event = 'message', data = '';
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data += line.slice(5).trim();
      }
      yield [event, JSON.parse(data)];
    }
  }
}
$('generate-button').addEventListener('click', async () => {
  const name = $('gen-model').value;
  if (!name) return say('gen-message', 'train a model first', true);
  const q = new URLSearchParams({ tokens: $('gen-tokens').value || '500', temperature: $('gen-temperature').value || '0.8',
                                  prompt: $('gen-prompt').value, stream: 'true' });
  for (const [k, id] of [['top_k', 'gen-top-k'], ['top_p', 'gen-top-p'], ['seed', 'gen-seed']]) if ($(id).value !== '') q.set(k, $(id).value);
  const ctrl = state.source = new AbortController();
  const finish = (msg, error) => { $('generate-button').disabled = false; $('stop-generate').disabled = true; if (msg !== undefined) say('gen-message', msg, error); };
  say('gen-message', '');
  $('generate-button').disabled = true; $('stop-generate').disabled = false;
  try {
    const r = await fetch(`lm/${enc(name)}/eval?${q}`, { headers: keyHeaders(), signal: ctrl.signal });
    if (!r.ok) throw await failure(r);
    $('gen-output').textContent = $('gen-prompt').value;
    let chars = 0;   // characters, not tokens: a word or BPE token holds several
    for await (const [event, data] of sseEvents(r)) {
      if (event === 'message') { $('gen-output').textContent += data.text; chars += [...data.text].length; }
      else if (event === 'done') return finish(`${chars} characters`);
      else if (event === 'error') return finish(data.detail, true);
    }
    finish('the connection was lost', true);
  } catch (e) {
    if (e.name === 'AbortError') finish('stopped'); else finish(e.message, true);
  }
});
$('stop-generate').addEventListener('click', () => { if (state.source) state.source.abort(); });

// ---- tabs: generate or chat --------------------------------------------------------------------------
function showTab(which) {
  for (const t of ['generate', 'chat']) {
    $(t).hidden = t !== which;
    $(`tab-${t}`).setAttribute('aria-selected', String(t === which));
  }
}
$('tab-generate').addEventListener('click', () => showTab('generate'));
$('tab-chat').addEventListener('click', () => showTab('chat'));

// ---- chat: the conversation lives here; each reply streams from POST lm/{name}/chat ---------------------
state.chat = [];
function addTurn(role, text) {
  const div = document.createElement('div');
  div.className = `turn ${role}`; div.textContent = text;
  $('chat-log').append(div);
  return div;
}
function conversation() {
  const system = $('chat-system').value.trim();
  return [...(system ? [{ role: 'system', content: system }] : []), ...state.chat];
}
$('chat-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const name = $('chat-model').value, text = $('chat-input').value;
  if (!name) return say('chat-message', 'no chat model yet: fine-tune one under 2. Train', true);
  if (!text.trim()) return;
  const body = { messages: [...conversation(), { role: 'user', content: text }], stream: true,
                 max_tokens: Number($('chat-tokens').value) || 256, temperature: Number($('chat-temperature').value) };
  const ctrl = state.chatSource = new AbortController();
  $('chat-send').disabled = true; $('chat-stop').disabled = false; say('chat-message', '');
  let reply = null, said = '';
  const finish = (msg, error) => {
    $('chat-send').disabled = false; $('chat-stop').disabled = true;
    if (said.trim()) state.chat.push({ role: 'assistant', content: said });   // what was seen stays, even if stopped
    if (msg !== undefined) say('chat-message', msg, error);
  };
  try {
    const r = await fetch(`lm/${enc(name)}/chat`, { method: 'POST', signal: ctrl.signal,
                                                    headers: { ...keyHeaders(), 'Content-Type': 'application/json' },
                                                    body: JSON.stringify(body) });
    if (!r.ok) throw await failure(r);          // a bad message changes nothing: the input stays for editing
    state.chat.push({ role: 'user', content: text });
    addTurn('user', text); $('chat-input').value = '';
    reply = addTurn('assistant', '');
    for await (const [event, data] of sseEvents(r)) {
      if (event === 'message') { said += data.text; reply.textContent = said; }
      else if (event === 'done') return finish(data.finish_reason === 'length' ? `cut at ${body.max_tokens} tokens` : '');
      else if (event === 'error') return finish(data.detail, true);
    }
    finish('the connection was lost', true);
  } catch (e) {
    if (e.name === 'AbortError') finish('stopped'); else finish(e.message, true);
  }
});
$('chat-input').addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey) { ev.preventDefault(); $('chat-form').requestSubmit(); }
});
$('chat-stop').addEventListener('click', () => { if (state.chatSource) state.chatSource.abort(); });
$('chat-reset').addEventListener('click', () => { state.chat = []; $('chat-log').replaceChildren(); say('chat-message', ''); });

// ---- start --------------------------------------------------------------------------------------------
$('api-key').value = localStorage.getItem('chadgpt-api-key') || '';
$('api-key').addEventListener('change', () => localStorage.setItem('chadgpt-api-key', $('api-key').value));
(async () => {
  try { await Promise.all([loadDatasets(), buildControls(), loadModels()]); }
  catch (e) { say('data-message', `cannot reach the chadgpt API: ${e.message}`, true); }
})();
