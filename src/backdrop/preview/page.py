"""The contact sheet's HTML: one file, its CSS and script inline, no network.

The set's rows travel as JSON inside the page; the script draws one page of rows at a time (a
10 000-image set is one parse of the JSON and 50 rows of DOM), with each card's labels as an SVG
over its thumbnail. The filters and the page number live in the URL's fragment
(``#split=train&cls=1&flag=failed&page=3``), so a view can be linked and the back button works.
"""

from __future__ import annotations

import html
import json

MARKER = '<meta name="generator" content="backdrop preview">'  # a sheet backdrop wrote (and may replace)

_CSS = """
:root { color-scheme: light dark; --fg:#1d232a; --bg:#f6f7f9; --card:#fff; --mut:#667; --bad:#c62828; --warn:#b26a00; }
@media (prefers-color-scheme: dark) { :root { --fg:#e7eaee; --bg:#15181c; --card:#1f242a; --mut:#9aa; } }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.35 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header { position: sticky; top: 0; z-index: 2; background: var(--bg); padding: 10px 16px; border-bottom: 1px solid #8884; }
h1 { font-size: 18px; margin: 0 0 6px; }
.bar { display: flex; flex-wrap: wrap; gap: 10px; align-items: center; }
.bar label { color: var(--mut); }
select, input, button { font: inherit; padding: 2px 6px; }
main { padding: 8px 16px 40px; }
.row { display: flex; gap: 10px; padding: 10px 0; border-bottom: 1px solid #8883; overflow-x: auto; }
.rowhead { flex: 0 0 150px; font-size: 12px; color: var(--mut); overflow-wrap: anywhere; }
.rowhead b { color: var(--fg); }
figure.card { flex: 0 0 auto; width: 230px; margin: 0; background: var(--card); border-radius: 6px; padding: 6px; box-shadow: 0 1px 2px #0002; }
figure.card.flagged { outline: 2px solid var(--warn); }
.frame { position: relative; width: 100%; background: #8882; }
.frame img, .frame svg { position: absolute; inset: 0; width: 100%; height: 100%; display: block; }
.frame svg text { paint-order: stroke; stroke: #000a; stroke-width: 3px; fill: #fff; font-weight: 600; }
figcaption { font-size: 12px; margin-top: 4px; overflow-wrap: anywhere; }
.kind { font-weight: 600; }
.muted { color: var(--mut); }
.flag { display: inline-block; font-size: 11px; padding: 0 5px; margin: 1px 2px 0 0; border-radius: 8px; background: var(--warn); color: #fff; }
.flag.failed, .flag.error, .flag.changed, .flag.unreadable { background: var(--bad); }
.legend span { display: inline-block; margin-right: 10px; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; border-radius: 2px; }
.pager { margin: 10px 0; }
"""

_JS = r"""
const D = JSON.parse(document.getElementById('sheet-data').textContent);
const SVG = 'http://www.w3.org/2000/svg';
const $ = (id) => document.getElementById(id);
function colour(c) { const i = Number.isFinite(+c) ? +c : [...String(c)].reduce((a, ch) => a * 31 + ch.charCodeAt(0), 7);
  return `hsl(${(i * 137.508) % 360}, 85%, 55%)`; }
function cname(c) { return D.names[String(c)] ?? (c < 0 ? 'object' : `class ${c}`); }
function state() { const p = new URLSearchParams(location.hash.slice(1));
  return { split: p.get('split') || '', cls: p.get('cls') || '', flag: p.get('flag') || '', q: p.get('q') || '',
           page: Math.max(1, parseInt(p.get('page') || '1', 10) || 1), per: Math.max(1, parseInt(p.get('per') || D.per, 10) || D.per) }; }
function go(changes) { const s = { ...state(), ...changes }; const p = new URLSearchParams();
  for (const [k, v] of Object.entries(s)) if (v !== '' && !(k === 'page' && v === 1) && !(k === 'per' && v === D.per)) p.set(k, v);
  location.hash = p.toString(); }
function cardClasses(c) { const out = new Set((c.l || []).map(o => String(o[0]))); if (c.cls) out.add(c.cls); return out; }
function rowMatches(r, s) {
  if (s.split && r.sp !== s.split) return false;
  if (s.q && !r.s.toLowerCase().includes(s.q.toLowerCase()) && !r.c.some(c => c.n.toLowerCase().includes(s.q.toLowerCase()))) return false;
  if (s.cls && !r.c.some(c => cardClasses(c).has(s.cls))) return false;
  if (s.flag && !r.c.some(c => (c.flags || []).includes(s.flag))) return false;
  return true; }
function el(tag, attrs, text) { const e = document.createElement(tag); for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text; return e; }
function overlay(c) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${c.w} ${c.H}`); svg.setAttribute('preserveAspectRatio', 'none');
  const fs = Math.max(c.w, c.H) / 22;
  for (const o of c.l || []) {
    const [cat, x0, y0, x1, y1, polys] = o; const col = colour(cat); const g = document.createElementNS(SVG, 'g');
    g.setAttribute('data-class', String(cat));
    const title = document.createElementNS(SVG, 'title'); title.textContent = cname(cat); g.appendChild(title);
    if (polys && polys.length) {
      for (const p of polys) { const pg = document.createElementNS(SVG, 'polygon'); const pts = [];
        for (let i = 0; i + 1 < p.length; i += 2) pts.push(`${p[i]},${p[i + 1]}`);
        pg.setAttribute('points', pts.join(' ')); pg.setAttribute('fill', col); pg.setAttribute('fill-opacity', '0.18');
        pg.setAttribute('stroke', col); pg.setAttribute('stroke-width', '2'); pg.setAttribute('vector-effect', 'non-scaling-stroke');
        g.appendChild(pg); }
    } else { const r = document.createElementNS(SVG, 'rect');
      r.setAttribute('x', x0); r.setAttribute('y', y0); r.setAttribute('width', Math.max(0, x1 - x0)); r.setAttribute('height', Math.max(0, y1 - y0));
      r.setAttribute('fill', 'none'); r.setAttribute('stroke', col); r.setAttribute('stroke-width', '2'); r.setAttribute('vector-effect', 'non-scaling-stroke');
      g.appendChild(r); }
    const t = document.createElementNS(SVG, 'text'); t.setAttribute('x', x0); t.setAttribute('y', Math.max(fs, y0 - fs * 0.2));
    t.setAttribute('font-size', fs); t.textContent = cname(cat); g.appendChild(t);
    svg.appendChild(g); }
  return svg; }
function card(c) {
  const fig = el('figure', { class: 'card' + ((c.flags || []).length ? ' flagged' : ''), 'data-name': c.n });
  const a = c.h ? el('a', { href: c.h, target: '_blank', title: c.n }) : el('div', { title: c.n });
  const frame = el('div', { class: 'frame' });
  frame.style.aspectRatio = c.w && c.H ? `${c.w} / ${c.H}` : '4 / 3';
  if (c.t) { frame.appendChild(el('img', { src: c.t, loading: 'lazy', alt: c.n })); frame.appendChild(overlay(c)); }
  a.appendChild(frame); fig.appendChild(a);
  const cap = el('figcaption');
  const kind = c.k === 'variant' ? `variant ${c.v}` : c.k;
  cap.appendChild(el('span', { class: 'kind' }, kind));
  if (c.seed !== undefined) cap.appendChild(el('span', {}, ` · seed ${c.seed}`));
  if (c.gen) cap.appendChild(el('span', { class: 'muted' }, ` · ${c.gen}`));
  cap.appendChild(el('div', { class: 'muted' }, c.n + (c.w ? ` · ${c.w}×${c.H}` : '') + ` · ${(c.l || []).length} label(s)`));
  if (c.scores) cap.appendChild(el('div', { class: 'muted' }, Object.entries(c.scores).map(([k, v]) => `${k} ${v}`).join(' · ')));
  for (const f of c.flags || []) cap.appendChild(el('span', { class: 'flag ' + f, title: D.flags[f] || f }, f));
  if (c.err) cap.appendChild(el('div', { class: 'muted' }, c.err));
  fig.appendChild(cap); return fig; }
function fillSelect(id, options, value) { const s = $(id); s.replaceChildren(el('option', { value: '' }, 'all'));
  for (const [v, label] of options) { const o = el('option', { value: v }, label); if (v === value) o.selected = true; s.appendChild(o); } }
function render() {
  const s = state(); const rows = D.rows.filter(r => rowMatches(r, s));
  const pages = Math.max(1, Math.ceil(rows.length / s.per)); const page = Math.min(s.page, pages);
  fillSelect('split', D.splits.filter(x => x).map(x => [x, x]), s.split);
  fillSelect('cls', D.classes.map(x => [x, Number.isFinite(+x) ? cname(x) : x]), s.cls);
  fillSelect('flag', Object.keys(D.flags).map(x => [x, x]), s.flag);
  $('q').value = s.q;
  const main = $('rows'); main.replaceChildren();
  for (const r of rows.slice((page - 1) * s.per, page * s.per)) {
    const div = el('div', { class: 'row', 'data-source': r.s });
    const head = el('div', { class: 'rowhead' }); head.appendChild(el('b', {}, r.s)); head.appendChild(el('div', {}, r.sp));
    div.appendChild(head); for (const c of r.c) div.appendChild(card(c)); main.appendChild(div); }
  const images = rows.reduce((n, r) => n + r.c.length, 0);
  $('count').textContent = `${rows.length} of ${D.rows.length} rows · ${images} images`;
  for (const id of ['pager', 'pager2']) { const p = $(id); p.replaceChildren();
    const prev = el('button', { type: 'button' }, '‹ previous'); prev.disabled = page <= 1; prev.onclick = () => go({ page: page - 1 });
    const next = el('button', { type: 'button' }, 'next ›'); next.disabled = page >= pages; next.onclick = () => go({ page: page + 1 });
    p.append(prev, ` page ${page} of ${pages} `, next); }
  document.body.dataset.rendered = String(page); }
for (const id of ['split', 'cls', 'flag']) $(id).addEventListener('change', e => go({ [id]: e.target.value, page: 1 }));
$('q').addEventListener('change', e => go({ q: e.target.value, page: 1 }));
const legend = $('legend'); for (const c of D.classes) { if (!Number.isFinite(+c)) continue;
  const sp = el('span'); const i = el('i'); i.style.background = colour(c); sp.append(i, cname(c)); legend.appendChild(sp); }
window.addEventListener('hashchange', render); render();
"""


def render(data: dict) -> str:
    """The page for ``data`` (see ``build_preview``)."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    payload = payload.replace("</", "<\\/").replace("<!--", "<\\!--")  # cannot end the script element
    title = html.escape(f"{data['title']} · backdrop preview")
    n_images = sum(len(r["c"]) for r in data["rows"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
{MARKER}
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{_CSS}</style></head>
<body>
<header><h1>{html.escape(data['title'])} <span class="muted">· {html.escape(data['format'])} · {len(data['rows'])} rows · {n_images} images</span></h1>
<div class="bar">
<label>split <select id="split"></select></label>
<label>class <select id="cls"></select></label>
<label>flag <select id="flag"></select></label>
<label>name <input id="q" type="search" placeholder="part of a file name"></label>
<span id="count" class="muted"></span>
<span id="pager" class="pager"></span>
</div>
<div id="legend" class="legend muted"></div>
</header>
<main id="rows"><noscript>This contact sheet needs JavaScript to draw its rows.</noscript></main>
<footer style="padding: 0 16px 20px"><span id="pager2" class="pager"></span></footer>
<script type="application/json" id="sheet-data">{payload}</script>
<script>{_JS}</script>
</body></html>
"""
