"use strict";
// The status page: listens to /events and redraws from each snapshot.
// `history` events carry the last 10 minutes of samples; `snapshot` events
// carry the current state and the newest sample.
window.gpumesh = (() => {
  const WINDOW_MS = 10 * 60 * 1000;
  const RATE_WINDOW_MS = 5000;
  const COLORS = ["#3d5afe", "#e8590c", "#2b8a3e", "#c2255c", "#1098ad", "#f08c00", "#7048e8", "#5c940d", "#d6336c", "#495057"];
  const $ = (id) => document.getElementById(id);
  const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const num = (v, digits = 1) => (v == null || Number.isNaN(v) ? "–" : Number(v).toFixed(digits));
  const ms = (v) => (v == null ? "–" : v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : Math.round(v).toString());
  const gb = (mb) => (mb / 1024).toFixed(mb < 10240 ? 1 : 0);
  const state = { history: [], last: null, counts: {}, renders: 0 };
  // A node that asks for API tokens keeps this page's session in a
  // cookie (the address with the token is opened once): no token in any
  // address here.

  function colorOf(name) {
    let h = 0;
    for (const c of name) h = (h * 31 + c.charCodeAt(0)) >>> 0;
    return COLORS[h % COLORS.length];
  }

  function duration(s) {
    if (s < 60) return `${Math.floor(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  // Requests per second per local model, from the executed counts of the
  // snapshots of the last few seconds.
  function rates(snapshot) {
    const out = {};
    for (const m of snapshot.node.models) {
      const seen = (state.counts[m.name] ||= []);
      seen.push([snapshot.unix_ms, m.completed]);
      while (seen.length > 2 && seen[0][0] < snapshot.unix_ms - RATE_WINDOW_MS) seen.shift();
      const [t0, c0] = seen[0];
      out[m.name] = snapshot.unix_ms > t0 ? ((m.completed - c0) * 1000) / (snapshot.unix_ms - t0) : 0;
    }
    return out;
  }

  function card(label, value, id) {
    return `<div class="card"><div class="label">${esc(label)}</div><div class="value" id="${id}">${esc(value)}</div></div>`;
  }

  function renderCards(s) {
    const nodes = s.cluster.nodes.filter((n) => n.trusted && n.status !== "dead");
    const executed = nodes.reduce((sum, n) => sum + n.models.reduce((a, m) => a + (m.completed || 0), 0), 0);
    const throughput = (s.sample?.nodes || []).reduce((a, n) => a + n.requests_per_s, 0);
    const trusted = s.cluster.nodes.filter((n) => n.trusted).length;
    $("cards").innerHTML = [
      card("members alive", `${s.cluster.totals.nodes_alive} / ${trusted}`, "card-alive"),
      card("GPUs", s.cluster.totals.gpus, "card-gpus"),
      card("VRAM total", `${gb(s.cluster.totals.vram_total_mb)} GB`, "card-vram"),
      card("queued", s.cluster.totals.queue_depth, "card-queue"),
      card("in flight", s.cluster.totals.inflight, "card-inflight"),
      card("cluster req/s", num(throughput), "card-throughput"),
      card("requests executed", executed.toLocaleString("en"), "card-executed"),
    ].join("");
  }

  function renderSelf(s) {
    const n = s.node;
    $("node-title").textContent = `node ${n.name} · ${s.cluster.nodes.length} members known`;
    document.title = `gpumesh · ${n.name}`;
    const facts = [
      ["name", n.name], ["version", n.version], ["uptime", duration((s.unix_ms - n.started_unix_ms) / 1000)],
      ["generation", n.generation], ["HTTP", n.http_addr], ["gossip", n.gossip_addr ?? "–"],
      ["cluster link", n.cluster_addr], ["routing policy", n.policy], ["state", n.draining ? "draining" : "serving"],
    ];
    $("facts").innerHTML = facts.map(([k, v]) => `<div><dt>${esc(k)}</dt><dd>${esc(v)}</dd></div>`).join("");
    const me = s.cluster.nodes.find((x) => x.name === n.name);
    const perModel = rates(s);
    const rows = n.models.map((m) => {
      const gossiped = me?.models.find((x) => x.name === m.name) || {};
      return `<tr><td>${esc(m.name)}</td><td>${esc(m.device)}</td><td class="num">${m.queue_depth}</td>` +
        `<td class="num">${m.inflight}</td><td class="num">${num(perModel[m.name])}</td>` +
        `<td class="num">${ms(gossiped.p50_ms)}</td><td class="num">${ms(gossiped.p99_ms)}</td>` +
        `<td class="num">${ms(m.service_ms_per_item)}</td><td class="num">${m.max_batch_size}</td>` +
        `<td class="num">${m.completed.toLocaleString("en")}</td></tr>`;
    });
    $("models").tBodies[0].innerHTML = rows.join("") || `<tr><td colspan="10" class="muted">no models served here</td></tr>`;
    const pct = (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(0)} %`);
    const llms = n.llms.map((m) =>
      `<tr><td>${esc(m.name)}</td><td>${esc(m.engine)}</td><td>${m.ready ? "yes" : "no"}</td>` +
      `<td class="num">${m.running}</td><td class="num">${m.waiting}</td>` +
      `<td class="num">${ms(m.ttft_p50_ms)}</td><td class="num">${ms(m.ttft_p99_ms)}</td>` +
      `<td class="num">${num(m.decode_tokens_per_s)}</td><td class="num">${pct(m.kv_cache_use)}</td>` +
      `<td class="num">${pct(m.cached_ratio)}</td><td class="num">${m.requests.toLocaleString("en")}</td></tr>`);
    $("llms").hidden = llms.length === 0;
    $("llms").tBodies[0].innerHTML = llms.join("");
  }

  function vramBar(gpus) {
    if (!gpus.length) return `<span class="muted">–</span>`;
    const total = gpus.reduce((a, g) => a + g.memory_total_mb, 0);
    const used = gpus.reduce((a, g) => a + g.memory_total_mb - g.memory_free_mb - (g.memory_reserved_mb || 0), 0);
    const pct = total ? (100 * used) / total : 0;
    return `<div class="bar" title="${gb(used)} of ${gb(total)} GB"><span style="width:${pct.toFixed(1)}%"></span>` +
      `<em>${gb(used)} / ${gb(total)} GB</em></div>`;
  }

  function renderMembers(s) {
    const self = s.node.name;
    const rows = s.cluster.nodes.map((n) => {
      const gpus = n.gpus || [];
      const avg = (f) => (gpus.length ? gpus.reduce((a, g) => a + f(g), 0) / gpus.length : null);
      const gpuName = gpus.length ? `${gpus[0].name}${gpus.length > 1 ? ` ×${gpus.length}` : ""}` : "no GPU";
      const name = n.http_addr ? `<a href="${esc(`http://${n.http_addr}/`)}">${esc(n.name)}</a>` : esc(n.name);
      const models = n.models.map((m) => `${esc(m.name)} <span class="muted">${esc(m.device)}</span>`).join(", ");
      const power = avg((g) => g.power_w);
      return `<tr class="${n.name === self ? "self" : ""}" data-node="${esc(n.name)}" data-status="${esc(n.status)}">` +
        `<td>${name}</td><td><span class="pill ${esc(n.status)}">${esc(n.status)}</span></td>` +
        `<td class="num">${n.age_ms < 10000 ? (n.age_ms / 1000).toFixed(1) + " s" : duration(n.age_ms / 1000)}</td>` +
        `<td class="${n.trusted ? "yes" : "no"}">${n.trusted ? "yes" : "no"}</td>` +
        `<td class="${n.connected ? "yes" : "no"}">${n.connected ? "yes" : "no"}</td>` +
        `<td>${esc(gpuName)}</td><td>${vramBar(gpus)}</td>` +
        `<td class="num">${gpus.length ? num(avg((g) => g.utilization_pct), 0) + " %" : "–"}</td>` +
        `<td class="num">${gpus.length ? num(avg((g) => g.temperature_c), 0) + " °C" : "–"}</td>` +
        `<td class="num">${power == null ? "–" : num(power * gpus.length, 0) + " W"}</td>` +
        `<td class="num">${n.queue_depth}</td><td class="num">${n.inflight}</td><td>${models || '<span class="muted">–</span>'}</td></tr>`;
    });
    $("members").tBodies[0].innerHTML = rows.join("");
    const counts = { alive: 0, suspect: 0, dead: 0 };
    for (const n of s.cluster.nodes) counts[n.status] = (counts[n.status] || 0) + 1;
    $("member-count").textContent = `${counts.alive} alive · ${counts.suspect} suspect · ${counts.dead} dead`;
  }

  function ago(unixMs, now) {
    const s = Math.max(0, (now - unixMs) / 1000);
    return s < 1 ? "now" : `${duration(s)} ago`;
  }

  function renderJobs(s) {
    const rows = s.jobs.map((j) => `<tr><td>${esc(j.id)}</td><td>${esc(j.model)}</td>` +
      `<td><span class="pill ${esc(j.state)}">${esc(j.state)}</span></td><td>${esc(j.node ?? "–")}</td>` +
      `<td class="num">${j.attempts}</td><td class="num">${ago(j.updated_ms, s.unix_ms)}</td></tr>`);
    $("jobs").tBodies[0].innerHTML = rows.join("") || `<tr><td colspan="6" class="muted">no jobs submitted here yet</td></tr>`;
  }

  function renderDecisions(s) {
    $("policy").textContent = `policy ${s.node.policy}`;
    const rows = s.decisions.map((d) => {
      const when = new Date(d.unix_ms).toLocaleTimeString("en-GB");
      const cands = d.candidates.map((c) => {
        const label = c.excluded ? `${esc(c.node)} <i>${esc(c.excluded)}</i>` : `${esc(c.node)} ${num(c.score, 2)}`;
        return c.node === d.chosen ? `<b>${label}</b>` : label;
      }).join(" · ");
      return `<tr><td>${esc(when)}</td><td>${esc(d.model)}</td><td class="num">${d.attempt}</td>` +
        `<td>${esc(d.chosen ?? "none")}</td><td class="cand">${cands}</td></tr>`;
    });
    $("decisions").tBodies[0].innerHTML = rows.join("") || `<tr><td colspan="5" class="muted">no requests routed yet</td></tr>`;
  }

  function value(node, metric) {
    if (metric === "vram_pct") return node.vram_total_mb ? (100 * node.vram_used_mb) / node.vram_total_mb : null;
    return node[metric] ?? null;
  }

  // One line per node over the last 10 minutes; the legend lists the
  // highest latest values first.
  function drawChart(figure, now) {
    const canvas = figure.querySelector("canvas");
    const metric = figure.dataset.metric;
    const unit = figure.dataset.unit;
    const dpr = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    if (!width || !height) return;
    canvas.width = width * dpr; canvas.height = height * dpr;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const series = new Map();
    let max = Number(figure.dataset.max) || 0;
    const fixedMax = Boolean(figure.dataset.max);
    for (const sample of state.history) {
      for (const n of sample.nodes) {
        const v = value(n, metric);
        if (v == null) continue;
        if (!series.has(n.name)) series.set(n.name, []);
        series.get(n.name).push([sample.unix_ms, v]);
        if (!fixedMax && v > max) max = v;
      }
    }
    max = max > 0 ? (fixedMax ? max : max * 1.15) : 1;
    const left = 40, right = 6, top = 6, bottom = 16;
    const x = (t) => left + ((t - (now - WINDOW_MS)) / WINDOW_MS) * (width - left - right);
    const y = (v) => top + (1 - v / max) * (height - top - bottom);
    ctx.font = "10px system-ui, sans-serif";
    ctx.fillStyle = "#6b7385"; ctx.strokeStyle = "#e3e7ee"; ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      ctx.beginPath(); ctx.moveTo(left, y(v)); ctx.lineTo(width - right, y(v)); ctx.stroke();
      ctx.fillText(v >= 100 ? Math.round(v) : v.toFixed(v >= 10 ? 0 : 1), 4, y(v) + 3);
    }
    for (const minutes of [10, 5, 0]) {
      ctx.fillText(minutes ? `-${minutes} min` : "now", x(now - minutes * 60000) - (minutes ? 0 : 18), height - 3);
    }
    // The 8 highest latest values in colour, drawn last; any others thin and grey.
    const latest = [...series].map(([name, points]) => [name, points[points.length - 1][1]]);
    latest.sort((a, b) => b[1] - a[1]);
    const leaders = new Set(latest.slice(0, 8).map(([name]) => name));
    const ordered = [...series].sort(([a], [b]) => leaders.has(a) - leaders.has(b));
    for (const [name, points] of ordered) {
      const highlighted = leaders.has(name) || series.size <= 8;
      ctx.strokeStyle = highlighted ? colorOf(name) : "#cfd5e0";
      ctx.lineWidth = highlighted ? 1.6 : 0.8;
      ctx.beginPath();
      points.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
      ctx.stroke();
    }
    const shown = latest.slice(0, 8).map(([name, v]) =>
      `<span><i style="background:${colorOf(name)}"></i>${esc(name)} ${num(v, v < 10 ? 1 : 0)}${esc(unit ? " " + unit : "")}</span>`);
    if (latest.length > 8) shown.push(`<span>+${latest.length - 8} more</span>`);
    figure.querySelector(".legend").innerHTML = shown.join("") || "no data yet";
  }

  function drawCharts(now) {
    for (const figure of document.querySelectorAll(".chart")) drawChart(figure, now);
  }

  function render(s) {
    state.last = s;
    if (s.sample && !state.history.some((h) => h.unix_ms === s.sample.unix_ms)) state.history.push(s.sample);
    while (state.history.length && state.history[0].unix_ms < s.unix_ms - WINDOW_MS) state.history.shift();
    renderCards(s);
    renderSelf(s);
    renderMembers(s);
    renderJobs(s);
    renderDecisions(s);
    drawCharts(s.unix_ms);
    state.renders += 1;
  }

  function setLive(on) {
    const live = $("live");
    live.className = `live ${on ? "on" : "off"}`;
    live.textContent = on ? "live" : "reconnecting…";
  }

  function connect() {
    const source = new EventSource("/events");
    state.source = source;
    source.addEventListener("history", (e) => { state.history = JSON.parse(e.data); });
    source.addEventListener("snapshot", (e) => { setLive(true); render(JSON.parse(e.data)); });
    source.onerror = () => setLive(false); // EventSource reconnects by itself
  }

  window.addEventListener("resize", () => state.last && drawCharts(state.last.unix_ms));
  connect();
  // stop() freezes the page (the tests use it to render views of their own).
  return { render, state, stop: () => state.source.close() };
})();
