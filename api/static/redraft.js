// Redraft pages: plain JavaScript, no build step, nothing loaded from elsewhere.
// The API key is asked for once and kept in sessionStorage only (this tab); every call to the
// JSON API sends it as `Authorization: Bearer <key>`. The SSE stream is read with fetch() and a
// ReadableStream reader, because EventSource cannot send that header.
"use strict";

(() => {
  const KEY = "redraft.apiKey";
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  // Special tokens in the fixed text (BOS, EOS, ...) are hidden; written ones ([EMPTY]) show as a dot.
  const SPECIAL = /^(\[[A-Z_]+\]|<\|[^|>]+\|>|<\/?s>|<pad>|<mask>|<unk>)$/;

  // What the page did, for people debugging it and for the browser test (tests/web).
  const trace = (window.redraft = {
    jobId: null, free: 0, maskedNow: 0, maskedAfterStep: [], stepEvents: 0, chunks: 0,
    liveStream: false, openedWhile: null, done: false, status: null, finalText: null, replayStep: null,
    replayMasked: null,
  });

  const $ = (sel, root = document) => root.querySelector(sel);
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k === "style") node.style.cssText = v; // CSSOM: allowed by the page's CSP (a style attribute is not)
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) node.append(c);
    return node;
  }

  // ---- errors -------------------------------------------------------------------------------
  function showError(message) {
    const box = $("#error");
    box.textContent = message;
    box.hidden = !message;
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // ---- the API key ----------------------------------------------------------------------------
  let keyWaiters = [];

  function showKeyState() {
    const has = !!sessionStorage.getItem(KEY);
    $("#key-form").hidden = has;
    $("#key-status").hidden = !has;
    if (!has) $("#api-key").focus();
  }

  function apiKey() {
    const key = sessionStorage.getItem(KEY);
    if (key) return Promise.resolve(key);
    showKeyState();
    return new Promise((resolve) => keyWaiters.push(resolve));
  }

  function setupKey() {
    $("#key-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const key = $("#api-key").value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY, key);
      $("#api-key").value = "";
      showError("");
      showKeyState();
      const waiters = keyWaiters;
      keyWaiters = [];
      waiters.forEach((w) => w(key));
    });
    $("#key-forget").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      showKeyState();
    });
    showKeyState();
  }

  // Calls the JSON API. A refused key is forgotten and asked for again, then the call is retried.
  async function api(path, { method = "GET", body, raw = false, signal, headers = {} } = {}) {
    for (;;) {
      const key = await apiKey();
      const h = { ...headers, Authorization: `Bearer ${key}` };
      if (body !== undefined) h["Content-Type"] = "application/json";
      const r = await fetch(path, { method, headers: h, signal, body: body === undefined ? undefined : JSON.stringify(body) });
      if (r.status === 401) {
        sessionStorage.removeItem(KEY);
        showError(`The API key was refused: ${await detail(r)}`);
        continue;
      }
      if (!r.ok) throw new ApiError(r.status, `${method} ${path}: ${r.status} ${await detail(r)}`);
      return raw ? r : r.json();
    }
  }

  async function detail(response) {
    try {
      const body = await response.json();
      return body.detail || JSON.stringify(body);
    } catch {
      return response.statusText;
    }
  }

  // ---- server-sent events over fetch() ---------------------------------------------------------
  async function* sseEvents(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    let event = "message";
    let data = [];
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        trace.chunks += 1;
        buf += decoder.decode(value, { stream: true });
        let i;
        while ((i = buf.search(/[\r\n]/)) >= 0) {
          if (buf[i] === "\r" && i === buf.length - 1) break; // CR LF split across chunks: wait for the LF
          const line = buf.slice(0, i);
          buf = buf.slice(i + (buf[i] === "\r" && buf[i + 1] === "\n" ? 2 : 1));
          if (line === "") {
            if (data.length) yield { event, data: data.join("\n") };
            event = "message";
            data = [];
          } else if (!line.startsWith(":")) {
            const c = line.indexOf(":");
            const field = c < 0 ? line : line.slice(0, c);
            let val = c < 0 ? "" : line.slice(c + 1);
            if (val.startsWith(" ")) val = val.slice(1);
            if (field === "event") event = val;
            else if (field === "data") data.push(val);
          }
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  // ---- the canvas -------------------------------------------------------------------------------
  const fmtConf = (c) => (c === null || c === undefined ? "" : Number(c).toFixed(3));

  class Canvas {
    // start: GET /v1/jobs/{id}/steps (canvas, canvas_text, fixed, mask_id)
    constructor(root, start) {
      this.root = root;
      this.start = start;
      this.n = start.canvas.length;
      this.free = start.fixed.filter((f) => !f).length;
      this.reset();
    }

    reset() {
      const s = this.start;
      this.tokens = s.canvas.slice();
      this.texts = s.canvas.map((id, i) => (s.canvas_text.length ? s.canvas_text[i] : `#${id}`));
      this.conf = new Array(this.n).fill(null);
      this.stepOf = new Array(this.n).fill(null);
      this.spans = [];
      this.root.replaceChildren();
      for (let i = 0; i < this.n; i++) {
        const span = el("span", { "data-pos": i });
        this.spans.push(span);
        this.root.append(span);
        this.paint(i, null);
      }
    }

    isMasked(i) {
      return !this.start.fixed[i] && this.tokens[i] === this.start.mask_id;
    }

    maskedCount() {
      let m = 0;
      for (let i = 0; i < this.n; i++) if (this.isMasked(i)) m += 1;
      return m;
    }

    paint(i, effect) {
      const span = this.spans[i];
      const text = this.texts[i];
      if (this.start.fixed[i]) {
        span.className = SPECIAL.test(text) ? "tok fixed special" : "tok fixed";
        span.dataset.state = "fixed";
        span.textContent = text;
        span.title = "fixed text";
      } else if (this.isMasked(i)) {
        span.className = "tok mask";
        span.dataset.state = "mask";
        span.textContent = "";
        span.title = `masked (position ${i})`;
      } else {
        const c = this.conf[i];
        const empty = SPECIAL.test(text);
        span.className = `tok written${empty ? " empty" : ""}${c !== null && c < 0.5 ? " low" : ""}`;
        span.dataset.state = "written";
        span.textContent = empty ? "" : text;
        span.title = `${empty ? `${text} (left out of the text) · ` : ""}confidence ${fmtConf(c)} · step ${this.stepOf[i]}`;
      }
      if (effect) {
        span.classList.remove("new", "flash");
        void span.offsetWidth; // restart the animation
        span.classList.add(effect);
      }
    }

    // Applies one step: `committed` first, then `remasked` (positions sent back to the mask).
    apply(step, animate) {
      for (const [pos, id, text, conf] of step.committed) {
        this.tokens[pos] = id;
        this.texts[pos] = text;
        this.conf[pos] = conf;
        this.stepOf[pos] = step.step;
        this.paint(pos, animate ? "new" : null);
      }
      for (const [pos] of step.remasked || []) {
        this.tokens[pos] = this.start.mask_id;
        this.texts[pos] = "";
        this.conf[pos] = null;
        this.stepOf[pos] = null;
        this.paint(pos, animate ? "flash" : null);
      }
    }
  }

  // ---- one job: live, then replay and drafts ---------------------------------------------------
  let watching = null; // the AbortController of the job being watched

  const seconds = (a, b) => (a && b ? `${((new Date(b) - new Date(a)) / 1000).toFixed(2)} s` : "–");
  const when = (t) => (t ? new Date(t).toLocaleString() : "–");

  function setStatus(job, note = "") {
    const s = $("#job-status");
    s.textContent = job.status;
    s.className = `status ${job.status}`;
    trace.status = job.status;
    $("#job-progress").textContent = note;
    const meta = $("#job-meta");
    if (meta) {
      const t = job.timings;
      const rows = [
        ["kind", job.kind], ["model", job.model], ["status", job.status],
        ["created", when(t.created_at)], ["waited in queue", seconds(t.created_at, t.started_at)],
        ["ran", seconds(t.started_at, t.finished_at)], ["steps run", String(t.steps_run)],
        ["attempts", String(t.attempts)], ["parameters", JSON.stringify(job.params)],
      ];
      meta.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
    }
  }

  // follow: read the event stream even when the job has finished (it replays every step, then `done`),
  // so a just-submitted job always comes into focus on screen, however fast it ran.
  async function watchJob(jobId, { follow = false } = {}) {
    if (watching) watching.abort();
    const ctl = (watching = new AbortController());
    Object.assign(trace, {
      jobId, maskedAfterStep: [], stepEvents: 0, chunks: 0, liveStream: false, openedWhile: null, done: false,
      status: null, finalText: null, replayStep: null, replayMasked: null,
    });
    $("#job-head").hidden = false;
    $("#replay").hidden = true;
    $("#result").hidden = true;
    $("#drafts").hidden = true;
    $("#job-id").textContent = jobId;
    $("#job-link").href = `/jobs/${encodeURIComponent(jobId)}`;
    const base = `/v1/jobs/${encodeURIComponent(jobId)}`;
    let job = await api(base, { signal: ctl.signal });
    setStatus(job);
    const start = await api(`${base}/steps`, { signal: ctl.signal });
    const canvas = new Canvas($("#canvas"), start);
    trace.free = canvas.free;
    trace.maskedNow = canvas.maskedCount();
    if (follow || !TERMINAL.has(job.status)) job = await stream(base, job, canvas, ctl.signal);
    if (ctl.signal.aborted) return;
    await finish(base, job, canvas, ctl.signal);
  }

  // Follows the SSE stream: it replays the steps so far, then sends each new one, then done/failed.
  async function stream(base, job, canvas, signal) {
    let last = -1;
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await api(`${base}/events`, { raw: true, signal, headers: { Accept: "text/event-stream" } });
        trace.liveStream = true;
        if (trace.openedWhile === null) trace.openedWhile = job.status;
        for await (const ev of sseEvents(r)) {
          if (ev.event === "step") {
            const step = JSON.parse(ev.data);
            if (step.step <= last) continue; // a reconnect replays from the start
            last = step.step;
            trace.stepEvents += 1;
            const pace = Number($("#pace").value);
            if (pace > 0) await sleep(pace);
            if (signal.aborted) return job;
            canvas.apply(step, true);
            trace.maskedNow = canvas.maskedCount();
            trace.maskedAfterStep.push(trace.maskedNow);
            setStatus({ ...job, status: "running" }, `step ${step.step + 1} · ${trace.maskedNow} of ${canvas.free} masked`);
          } else if (ev.event === "done" || ev.event === "failed") {
            return JSON.parse(ev.data);
          }
        }
      } catch (err) {
        if (signal.aborted || (err instanceof ApiError && err.status < 500)) throw err;
        if (attempt >= 5) throw err;
      }
      if (signal.aborted) return job;
      await sleep(500 * (attempt + 1)); // the stream ended early (network, restart): reconnect
      job = await api(base, { signal });
      if (TERMINAL.has(job.status)) return job;
    }
  }

  async function finish(base, job, canvas, signal) {
    const history = await api(`${base}/steps`, { signal });
    const steps = history.data;
    // The canvas shows the last step; a job opened after it finished is replayed to its end here.
    canvas.reset();
    steps.forEach((s) => canvas.apply(s, false));
    trace.maskedNow = canvas.maskedCount();
    setStatus(job, `${steps.length} steps · ${trace.maskedNow} of ${canvas.free} masked`);
    setupReplay(canvas, steps);
    $("#result").hidden = false;
    if (job.result) {
      $("#final-text").textContent = job.result.text;
      trace.finalText = job.result.text;
    }
    const err = $("#job-error");
    err.hidden = !job.error;
    err.textContent = job.error ? `${job.error.code}: ${job.error.message}` : "";
    await showDrafts(base, signal);
    trace.done = true;
  }

  function setupReplay(canvas, steps) {
    const scrub = $("#scrubber");
    const label = $("#scrub-label");
    scrub.max = String(steps.length);
    scrub.value = String(steps.length);
    const show = () => {
      const k = Number(scrub.value);
      canvas.reset();
      steps.slice(0, k).forEach((s, i) => canvas.apply(s, i === k - 1));
      const m = canvas.maskedCount();
      label.textContent = k === 0 ? `start · ${m} masked` : `step ${k} / ${steps.length} · ${m} masked`;
      trace.replayStep = k;
      trace.replayMasked = m;
    };
    scrub.oninput = show;
    label.textContent = `step ${steps.length} / ${steps.length} · ${canvas.maskedCount()} masked`;
    trace.replayStep = steps.length;
    trace.replayMasked = canvas.maskedCount();
    $("#replay").hidden = steps.length === 0;
  }

  function renderDiff(pre, text, ops) {
    pre.replaceChildren();
    for (const op of ops) {
      if (op.op === "equal") pre.append(text.slice(op.b[0], op.b[1]));
      if (op.old) pre.append(el("del", { text: op.old, title: `removed: characters ${op.a[0]}–${op.a[1]} of the parent` }));
      if (op.new) pre.append(el("ins", { text: op.new, title: `added: characters ${op.b[0]}–${op.b[1]}` }));
    }
  }

  async function showDrafts(base, signal) {
    const drafts = (await api(`${base}/drafts`, { signal })).data;
    const list = $("#draft-list");
    list.replaceChildren();
    for (const d of drafts) {
      const head = el("div", {},
        el("a", { href: `/drafts/${encodeURIComponent(d.id)}` }, el("code", { text: d.id })),
        ` · version ${d.version}`);
      const body = el("pre", { class: "final diff" });
      if (d.parent_id) {
        head.append(" · changes from ", el("a", { href: `/drafts/${encodeURIComponent(d.parent_id)}` }, "its parent"));
        const diff = await api(`/v1/drafts/${encodeURIComponent(d.id)}/diff?against=${encodeURIComponent(d.parent_id)}`, { signal });
        renderDiff(body, d.text, diff.ops);
        if (!diff.changed) head.append(" (none: the rewrite came out the same)");
      } else {
        body.textContent = d.text;
      }
      head.append(" · ", el("a", { href: `/?revise=${encodeURIComponent(d.id)}` }, "revise it"));
      list.append(el("li", {}, head, body));
    }
    $("#drafts").hidden = drafts.length === 0;
  }

  // ---- the new-job page ---------------------------------------------------------------------------
  function intOrNull(v) {
    return v === "" ? null : Number.parseInt(v, 10);
  }

  function parseJson(text, what) {
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new Error(`${what} is not valid JSON: ${err.message}`);
    }
  }

  function parseSpans(text) {
    return text.split(",").map((s) => s.trim()).filter(Boolean).map((s) => {
      const m = /^(\d+)\s*-\s*(\d+)(?:\s*:\s*(\d+))?$/.exec(s);
      if (!m) throw new Error(`span ${JSON.stringify(s)}: write start-end or start-end:max_tokens, e.g. 12-20`);
      const span = { start: Number(m[1]), end: Number(m[2]) };
      if (m[3]) span.max_tokens = Number(m[3]);
      return span;
    });
  }

  function jobBody(form) {
    const kind = form.elements.kind.value;
    const v = (id) => $(`#${id}`).value;
    const body = {};
    if (kind === "infill") {
      Object.assign(body, { kind: "infill", text: v("infill-text") });
    } else if (kind === "template") {
      const vars = v("template-variables").trim();
      Object.assign(body, { kind: "generate", template: v("template-source"),
        variables: vars ? parseJson(vars, "variables") : {} });
    } else if (kind === "prompt") {
      Object.assign(body, { kind: "generate", prompt: v("prompt-text") });
      const target = v("target-kind");
      const value = v("target-value");
      if (target === "regex") body.target = { regex: value };
      if (target === "choices") body.target = { choices: value.split("\n").map((s) => s.trim()).filter(Boolean) };
      if (target === "json_schema") body.target = { json_schema: parseJson(value, "the JSON schema") };
      if (intOrNull(v("prompt-max-tokens")) !== null) body.max_tokens = intOrNull(v("prompt-max-tokens"));
      if (intOrNull(v("prompt-min-tokens")) !== null) body.min_tokens = intOrNull(v("prompt-min-tokens"));
    } else {
      Object.assign(body, { kind: "revise", draft_id: v("revise-draft").trim(), spans: parseSpans(v("revise-spans")) });
      const auto = v("revise-auto");
      if (auto) {
        const x = Number(v("revise-auto-value"));
        body.auto = { [auto]: auto === "least_confident" ? Math.round(x) : x };
      }
    }
    if (v("model")) body.model = v("model");
    if (intOrNull(v("steps")) !== null) body.steps = intOrNull(v("steps"));
    if (intOrNull(v("seed")) !== null) body.seed = intOrNull(v("seed"));
    if (v("temperature") !== "") body.temperature = Number(v("temperature"));
    if (v("threshold") !== "") body.threshold = Number(v("threshold")); // sent only when filled
    return body;
  }

  function showKind(form) {
    const kind = form.elements.kind.value;
    form.querySelectorAll("fieldset[data-kind]").forEach((fs) => {
      fs.hidden = fs.dataset.kind !== kind;
      fs.disabled = fs.hidden;
    });
  }

  async function loadModels() {
    const models = (await api("/v1/models")).data;
    const select = $("#model");
    for (const m of models) {
      select.append(el("option", { value: m.name, text: `${m.name}${m.random_weights ? " (random weights)" : ""}` }));
    }
  }

  function newJobPage() {
    const form = $("#job-form");
    form.querySelectorAll("input[name=kind]").forEach((r) => r.addEventListener("change", () => showKind(form)));
    const revise = new URLSearchParams(location.search).get("revise");
    if (revise) {
      form.elements.kind.value = "revise";
      $("#revise-draft").value = revise;
      $("#revise-auto").value = "least_confident";
      $("#revise-auto-value").value = "3";
    }
    showKind(form);
    loadModels().catch((err) => showError(err.message));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      showError("");
      const button = $("#submit");
      button.disabled = true;
      try {
        const job = await api("/v1/jobs", { method: "POST", body: jobBody(form) });
        button.disabled = false;
        await watchJob(job.id, { follow: true });
      } catch (err) {
        if (err.name !== "AbortError") showError(err.message);
      } finally {
        button.disabled = false;
      }
    });
  }

  // ---- the job list ---------------------------------------------------------------------------------
  function jobsPage() {
    const limit = 25;
    let offset = 0;
    let timer = null;
    const load = async () => {
      clearTimeout(timer);
      const page = await api(`/v1/jobs?limit=${limit}&offset=${offset}`);
      const rows = page.data.map((j) => {
        const t = j.timings;
        const text = j.result ? j.result.text : j.error ? `${j.error.code}: ${j.error.message}` : "";
        return el("tr", { "data-job-id": j.id },
          el("td", {}, el("a", { href: `/jobs/${encodeURIComponent(j.id)}` }, el("code", { text: j.id.slice(0, 8) }))),
          el("td", { text: j.kind }),
          el("td", {}, el("span", { class: `status ${j.status}`, text: j.status })),
          el("td", { text: j.model }),
          el("td", { text: when(t.created_at) }),
          el("td", { text: seconds(t.created_at, t.started_at) }),
          el("td", { text: seconds(t.started_at, t.finished_at) }),
          el("td", { text: String(t.steps_run) }),
          el("td", { class: "text", title: text, text }));
      });
      $("#jobs tbody").replaceChildren(...rows);
      $("#jobs-range").textContent = page.count
        ? `${offset + 1}–${offset + page.data.length} of ${page.count}` : "no jobs yet";
      $("#newer").disabled = offset === 0;
      $("#older").disabled = offset + limit >= page.count;
      if (page.data.some((j) => !TERMINAL.has(j.status))) timer = setTimeout(() => load().catch(fail), 2000);
    };
    const fail = (err) => showError(err.message);
    $("#newer").addEventListener("click", () => { offset = Math.max(0, offset - limit); load().catch(fail); });
    $("#older").addEventListener("click", () => { offset += limit; load().catch(fail); });
    load().catch(fail);
  }

  // ---- one draft -------------------------------------------------------------------------------------
  function confidenceText(pre, text, layout) {
    pre.replaceChildren();
    const written = ((layout && layout.written) || []).slice().sort((a, b) => a[0] - b[0]);
    let at = 0;
    for (const [start, end, conf] of written) {
      if (start < at) continue;
      pre.append(text.slice(at, start));
      const shade = Math.round(60 + 40 * conf); // lighter is less sure
      pre.append(el("span", { class: "conf", title: `model-written · confidence ${fmtConf(conf)}`,
        style: `background: hsl(${Math.round(45 + 95 * conf)} 70% ${shade > 92 ? 92 : shade}%)`,
        text: text.slice(start, end) }));
      at = end;
    }
    pre.append(text.slice(at));
  }

  async function draftPage(draftId) {
    const id = encodeURIComponent(draftId);
    const d = await api(`/v1/drafts/${id}`);
    $("#draft-meta").replaceChildren(
      el("dt", { text: "version" }), el("dd", { text: String(d.version) }),
      el("dt", { text: "job" }), el("dd", {}, el("a", { href: `/jobs/${encodeURIComponent(d.job_id)}` }, el("code", { text: d.job_id }))),
      el("dt", { text: "parent" }), el("dd", {}, d.parent_id
        ? el("a", { href: `/drafts/${encodeURIComponent(d.parent_id)}` }, el("code", { text: d.parent_id })) : "none"),
      el("dt", { text: "created" }), el("dd", { text: when(d.created_at) }));
    confidenceText($("#draft-text"), d.text, d.layout);
    $("#revise-link").href = `/?revise=${id}`;
    if (d.parent_id) {
      const diff = await api(`/v1/drafts/${id}/diff?against=${encodeURIComponent(d.parent_id)}`);
      renderDiff($("#draft-diff"), d.text, diff.ops);
      $("#draft-diff-box").hidden = false;
    }
    const lineage = await api(`/v1/drafts/${id}/lineage`);
    const item = (x, note) => el("li", {},
      x.id === d.id ? el("strong", {}, el("code", { text: x.id })) : el("a", { href: `/drafts/${encodeURIComponent(x.id)}` }, el("code", { text: x.id })),
      ` · version ${x.version}${note}`, el("pre", { class: "final", text: x.text }));
    $("#lineage").replaceChildren(
      ...lineage.ancestors.map((x) => item(x, " · ancestor")), item(d, " · this draft"),
      ...lineage.descendants.map((x) => item(x, " · revision")));
  }

  // ---- start ---------------------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    setupKey();
    const { page, jobId, draftId } = document.body.dataset;
    const fail = (err) => { if (err.name !== "AbortError") showError(err.message); };
    if (page === "new") newJobPage();
    else if (page === "jobs") jobsPage();
    else if (page === "job") watchJob(jobId).catch(fail);
    else if (page === "draft") draftPage(draftId).catch(fail);
  });
})();
