// The playground and gallery (/ui). A file, not an inline script: the page's policy runs scripts from the service only.
// Every call goes to the service's own API with the key from sessionStorage (this tab only). Everything a user or a
// stored image controls (prompts, ids, model names, errors) is rendered with textContent, never as markup.
"use strict";

(function () {
  const KEY = "sdxl-serve.key";
  const PAGE = 24;
  const $ = (id) => document.getElementById(id);
  let schedulers = [];
  let modelDefaults = new Map();
  let galleryCursor = null;

  // --- the API ------------------------------------------------------------------------------------------------
  class ApiError extends Error {}

  function url(path) {
    // Relative to the page, so that behind a proxy prefix (/prefix/ui) the calls go to /prefix/generate.
    return new URL(path, document.baseURI);
  }

  async function call(path, options = {}) {
    const headers = new Headers(options.headers || {});
    const key = sessionStorage.getItem(KEY);
    if (key) headers.set("X-API-Key", key);
    const response = await fetch(url(path), { ...options, headers });
    if (response.status === 401) {
      sessionStorage.removeItem(KEY);
      showLogin(key ? "The key was refused." : "");
      throw new ApiError("the service needs its API key");
    }
    if (!response.ok) {
      let message = `HTTP ${response.status}`;
      try {
        const body = await response.json();
        if (body && body.error) message = body.error.message;
      } catch (ignored) {
        // not JSON: the status says enough
      }
      throw new ApiError(message);
    }
    return response;
  }

  async function getJson(path) {
    return (await call(path)).json();
  }

  async function postJson(path, body, headers = {}) {
    const response = await call(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...headers },
      body: JSON.stringify(body),
    });
    return response.json();
  }

  // A job's changes from /jobs/{id}/events. EventSource cannot send the key, so: fetch and read the stream.
  async function watch(jobId, onView) {
    const response = await call(`jobs/${encodeURIComponent(jobId)}/events`, { headers: { Accept: "text/event-stream" } });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let last = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data: "))
          .map((line) => line.slice(6))
          .join("\n");
        if (data) {
          last = JSON.parse(data);
          onView(last);
        }
      }
    }
    return last;
  }

  // --- running a job --------------------------------------------------------------------------------------------
  function setStatus(text, step, total) {
    $("job-status").textContent = text;
    $("progress").max = total || 1;
    $("progress").value = step || 0;
  }

  function showError(error) {
    $("error").textContent = error instanceof Error ? error.message : String(error);
  }

  async function run(path, body, what) {
    showError("");
    $("go").disabled = true;
    try {
      setStatus(`${what}: submitting`, 0, 1);
      const job = await postJson(path, body, { Prefer: "respond-async" });
      const show = (view) => setStatus(`${what}: ${view.status}`, view.progress.step, view.progress.total);
      show(job);
      const end = (await watch(job.id, show)) || (await getJson(`jobs/${encodeURIComponent(job.id)}`));
      show(end);
      if (end.status !== "succeeded") {
        throw new ApiError(end.error ? end.error.message : `the job ended ${end.status}`);
      }
      setStatus(`${what}: done`, end.progress.total, end.progress.total);
      const results = $("results");
      clear(results);
      for (const image of end.images) {
        results.append(card(image.id, { kind: end.kind, prompt: body.prompt, seed: image.seed, model: end.model,
                                        parent_id: end.parent_id }, false));
      }
      await loadGallery(true);
    } catch (error) {
      setStatus(`${what}: failed`, 0, 1);
      showError(error);
    } finally {
      $("go").disabled = false;
    }
  }

  function number(id) {
    const text = $(id).value.trim();
    return text === "" ? undefined : Number(text);
  }

  function formRequest() {
    const body = { prompt: $("prompt").value, num_images: number("num_images") || 1 };
    const optional = {
      negative_prompt: $("negative_prompt").value || undefined,
      model: $("model").value || undefined,
      width: number("width"),
      height: number("height"),
      num_inference_steps: number("steps"),
      guidance_scale: number("guidance"),
      seed: number("seed"),
      scheduler: $("scheduler").value || undefined,
    };
    for (const [name, value] of Object.entries(optional)) if (value !== undefined) body[name] = value;
    if ($("lora").value) body.loras = [{ name: $("lora").value, scale: number("lora_scale") ?? 1 }];
    return body;
  }

  // What made a stored image, as a request that makes it again (null where the gallery cannot: a mask or a
  // ControlNet image is not in the provenance).
  function again(p) {
    const shared = { prompt: p.prompt, seed: p.seed, num_inference_steps: p.steps, guidance_scale: p.guidance_scale };
    if (p.negative_prompt) shared.negative_prompt = p.negative_prompt;
    if (p.kind === "refine") {
      return p.parent_id ? ["refine", { ...shared, id: p.parent_id, strength: p.strength }] : null;
    }
    if (p.kind === "inpaint" || p.controlnet) return null;
    const body = { ...shared, model: p.model, width: p.width, height: p.height };
    if (p.prompt_2) body.prompt_2 = p.prompt_2;
    if (p.negative_prompt_2) body.negative_prompt_2 = p.negative_prompt_2;
    if (schedulers.includes(p.scheduler)) body.scheduler = p.scheduler;
    if (p.loras && p.loras.length) body.loras = p.loras.map((l) => ({ name: l.name, scale: l.scale }));
    if (p.vae) body.vae = p.vae;
    if (p.refine && p.refine.high_noise_frac) body.refine = { high_noise_frac: p.refine.high_noise_frac };
    if (p.kind === "img2img") {
      return p.parent_id ? ["img2img", { ...body, image_id: p.parent_id, strength: p.strength }] : null;
    }
    return ["generate", body];
  }

  // --- cards ----------------------------------------------------------------------------------------------------
  function text(tag, content, className) {
    const node = document.createElement(tag);
    node.textContent = content;
    if (className) node.className = className;
    return node;
  }

  function button(label, action) {
    const node = text("button", label);
    node.type = "button";
    node.addEventListener("click", action);
    return node;
  }

  async function showImage(img, link, id) {
    try {
      const blob = await (await call(`download/${encodeURIComponent(id)}`)).blob();
      const objectUrl = URL.createObjectURL(blob);
      img.src = objectUrl;
      link.href = objectUrl;
    } catch (error) {
      img.alt = `not loaded: ${error.message}`;
    }
  }

  function card(id, p, inGallery) {
    const node = document.createElement("article");
    node.className = "card";
    node.dataset.id = id;
    const img = document.createElement("img");
    img.alt = p.prompt || id;
    const link = text("a", "Download");
    link.download = `${id}.png`;
    showImage(img, link, id);

    const facts = document.createElement("dl");
    const rows = [["id", id], ["kind", p.kind], ["seed", p.seed], ["model", p.model], ["parent", p.parent_id || "none"]];
    for (const [name, value] of rows) facts.append(text("dt", name), text("dd", String(value ?? "")));

    const buttons = document.createElement("div");
    buttons.className = "buttons";
    buttons.append(link);
    const prompt = p.prompt || "";
    buttons.append(button("Refine", () => run("refine", { id, prompt, strength: 0.3 }, "refine")));
    buttons.append(button("Img2img from this", () =>
      run("img2img", { image_id: id, prompt: $("prompt").value || prompt, strength: 0.6 }, "img2img")));
    const recipe = inGallery ? again(p) : null;
    if (recipe) buttons.append(button("Same again", () => run(recipe[0], recipe[1], `same again (${recipe[0]})`)));
    buttons.append(button("Delete", () => remove(id)));
    node.append(img, text("p", prompt, "prompt"), facts, buttons);
    return node;
  }

  // Cards leave through here, so that the PNGs they hold as object URLs are released with them.
  function drop(node) {
    for (const img of node.querySelectorAll("img")) if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
    node.remove();
  }

  function clear(container) {
    for (const node of [...container.children]) drop(node);
  }

  async function remove(id) {
    showError("");
    try {
      await call(`images/${encodeURIComponent(id)}`, { method: "DELETE" });
      for (const node of document.querySelectorAll(".card")) if (node.dataset.id === id) drop(node);
    } catch (error) {
      showError(error);
    }
  }

  async function loadGallery(fresh) {
    const gallery = $("gallery");
    if (fresh) {
      galleryCursor = null;
      clear(gallery);
    }
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (galleryCursor) query.set("cursor", galleryCursor);
    const page = await getJson(`images?${query}`);
    for (const image of page.images) gallery.append(card(image.id, image.provenance || {}, true));
    galleryCursor = page.next_cursor;
    $("more").hidden = !galleryCursor;
  }

  // --- start ----------------------------------------------------------------------------------------------------
  function option(select, value, label) {
    const node = text("option", label ?? value);
    node.value = value;
    select.append(node);
  }

  function showLogin(message) {
    $("app").hidden = true;
    $("login").hidden = false;
    $("forget").hidden = true;
    $("key-error").textContent = message;
    $("key").focus();
  }

  // Each model has its own size, steps and guidance; picking one fills them in.
  function applyDefaults() {
    const defaults = modelDefaults.get($("model").value);
    if (!defaults) return;
    $("width").value = defaults.width;
    $("height").value = defaults.height;
    $("steps").value = defaults.num_inference_steps;
    $("steps").max = defaults.max_steps;
    $("guidance").value = defaults.guidance_scale;
  }

  async function start() {
    let models;
    try {
      models = await getJson("models");
    } catch (error) {
      if (!$("login").hidden) return; // asked for the key
      $("app").hidden = false;
      showError(error);
      return;
    }
    $("login").hidden = true;
    $("app").hidden = false;
    $("forget").hidden = !sessionStorage.getItem(KEY);
    schedulers = models.schedulers;
    for (const select of ["model", "scheduler", "lora"]) {
      const keep = $(select).querySelector("option[value='']");
      $(select).replaceChildren(...(keep ? [keep] : []));
    }
    for (const model of models.models) option($("model"), model.name);
    $("model").value = models.default;
    for (const name of models.schedulers) option($("scheduler"), name);
    for (const name of models.loras) option($("lora"), name);
    modelDefaults = new Map(models.models.map((m) => [m.name, m.defaults]));
    applyDefaults();
    try {
      await loadGallery(true);
    } catch (error) {
      showError(error);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY, $("key").value);
      $("key").value = "";
      start();
    });
    $("forget").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      clear($("results"));
      clear($("gallery"));
      showLogin("");
    });
    $("generate").addEventListener("submit", (event) => {
      event.preventDefault();
      run("generate", formRequest(), "generate");
    });
    $("model").addEventListener("change", applyDefaults);
    $("reload").addEventListener("click", () => loadGallery(true).catch(showError));
    $("more").addEventListener("click", () => loadGallery(false).catch(showError));
    start();
  });
})();
