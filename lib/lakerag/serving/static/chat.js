// The lakerag chat page: plain JavaScript, no build step, nothing loaded from elsewhere.
// The conversation lives here and is sent with every question (the server stores none of it).
"use strict";

const state = { messages: [], documents: [], config: null, busy: false };
const $ = (id) => document.getElementById(id);

function element(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.textContent = text; // text only: document text and answers never become markup
  return node;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

class SignInNeeded extends Error {}

async function getJson(url) {
  const response = await fetch(url);
  if (response.status === 401) throw new SignInNeeded();
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  return response.json();
}

async function signIn(event) {
  event.preventDefault();
  // The server keeps a valid token in an HttpOnly cookie, so links to cited PDFs carry it too.
  const response = await fetch("/api/session", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: $("token").value }),
  });
  if (response.ok) window.location.reload();
  else showError("That token is not known to this server.");
}

async function init() {
  // Controls work from the first moment: the page must not drop an Enter typed while the
  // model information and document list are still loading.
  $("document").addEventListener("change", onDocumentChosen);
  $("ask").addEventListener("submit", onAsk);
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("ask").requestSubmit();
    }
  });
  $("new-chat").addEventListener("click", () => {
    state.messages = [];
    $("conversation").replaceChildren();
    showError("");
    $("question").focus();
  });
  try {
    state.config = await getJson("/api/config");
    const version = state.config.model_version ? ` (version ${state.config.model_version})` : "";
    const who = state.config.authentication ? ` Signed in as ${state.config.user}.` : "";
    $("model").textContent = `Answers from ${state.config.model_uri}${version}.${who}`;
    if (state.config.documents) {
      state.documents = await getJson("/api/documents");
      for (const doc of state.documents) {
        $("document").append(element("option", { value: doc.doc_id }, `${doc.title} (${doc.file_name})`));
      }
      $("filters").hidden = state.documents.length === 0;
    }
  } catch (err) {
    if (err instanceof SignInNeeded) {
      $("model").textContent = "Sign in to ask questions.";
      $("ask").hidden = true;
      $("sign-in").hidden = false;
      $("sign-in").addEventListener("submit", signIn);
      $("token").focus();
      return;
    }
    showError(`The server could not be reached (${err.message}); reload the page to try again.`);
  }
}

function onDocumentChosen() {
  const doc = state.documents.find((d) => d.doc_id === $("document").value);
  const sections = $("section");
  sections.replaceChildren(element("option", { value: "" }, "All sections"));
  for (const title of doc ? doc.sections : []) sections.append(element("option", { value: title }, title));
  sections.disabled = !doc;
}

function currentFilters() {
  const filters = [];
  if ($("document").value) filters.push(`doc=${$("document").value}`);
  if ($("section").value) filters.push(`section=${$("section").value}`);
  return filters;
}

function history() {
  // The latest turns the server accepts, starting with a question.
  const room = Math.max(0, (state.config ? state.config.max_messages : 20) - 1);
  const recent = room ? state.messages.slice(-room) : [];
  return recent.length && recent[0].role === "assistant" ? recent.slice(1) : recent;
}

function setBusy(busy) {
  state.busy = busy;
  $("send").disabled = busy;
  clearInterval(state.timer);
  if (!busy) {
    $("status").textContent = "";
    return;
  }
  const started = Date.now();
  const tick = () => {
    const seconds = Math.round((Date.now() - started) / 1000);
    $("status").textContent = `Searching the documents and writing the answer… ${seconds} s`;
  };
  tick();
  state.timer = setInterval(tick, 1000);
}

async function onAsk(event) {
  event.preventDefault();
  if (state.busy) return;
  const question = $("question").value.trim();
  if (!question) {
    showError("Type a question first.");
    $("question").focus();
    return;
  }
  showError("");
  const messages = [...history(), { role: "user", content: question }];
  const turn = element("li", { class: "turn user" });
  turn.append(element("p", { class: "role" }, "You"), element("div", { class: "text" }, question));
  $("conversation").append(turn);
  setBusy(true);
  let answerTurn = null;
  try {
    const response = await fetch("/invocations", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ input: messages, custom_inputs: { filters: currentFilters() }, stream: true }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      turn.remove(); // keep the question in the box to fix it
      showError(body.message || `The server answered ${response.status}.`);
      return;
    }
    answerTurn = $("answer-template").content.firstElementChild.cloneNode(true);
    const draft = element("div", { class: "text draft" });
    answerTurn.querySelector(".text").replaceWith(draft);
    answerTurn.querySelector(".sources-title").hidden = true;
    answerTurn.querySelector(".feedback").hidden = true;
    $("conversation").append(answerTurn);
    const prediction = await readStream(response, (piece) => { draft.textContent += piece; });
    state.messages = [...messages, { role: "assistant", content: prediction.answer }];
    showAnswer(answerTurn, question, prediction);
    $("question").value = "";
  } catch (err) {
    turn.remove();
    if (answerTurn) answerTurn.remove();
    showError(`The answer did not arrive (${err.message}); your question is still in the box.`);
  } finally {
    setBusy(false);
    $("question").focus();
  }
}

// Server-sent ResponsesAgent events: output_text deltas (the draft as the model writes), then
// response.output_item.done whose custom_outputs is the checked answer record.
async function readStream(response, onPiece) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let result = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const line = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 2);
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") return result || Promise.reject(new Error("no answer in the stream"));
      const event = JSON.parse(data);
      if (event.type === "error" || event.error) throw new Error(event.message || event.error.message);
      if (event.type === "response.output_text.delta") {
        onPiece(event.delta);
        $("status").textContent = "Writing the answer…";
      }
      if (event.type === "response.output_item.done") {
        result = event.custom_outputs;
        $("status").textContent = "";
      }
    }
  }
  if (!result) throw new Error("the stream ended early");
  return result;
}

function pages(citation) {
  return citation.page_end !== citation.page_start ? `pp. ${citation.page_start}-${citation.page_end}`
    : `p. ${citation.page_start}`;
}

function pdfLink(citation, page) {
  return `/documents/${encodeURIComponent(citation.doc_id)}.pdf#page=${page}`;
}

// Markdown as the model writes it (code fences, lists, paragraphs, `code`, **bold**, [n]),
// built as DOM nodes with textContent only: nothing from the model becomes markup.
function renderMarkdown(text, citations) {
  const root = element("div", { class: "text rendered" });
  const bySource = new Map(citations.map((c) => [c.source, c]));
  const lines = text.split("\n");
  let list = null;
  let paragraph = null;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.trim().startsWith("```")) {
      const code = [];
      for (i++; i < lines.length && !lines[i].trim().startsWith("```"); i++) code.push(lines[i]);
      const pre = element("pre");
      pre.append(element("code", {}, code.join("\n")));
      root.append(pre);
      list = paragraph = null;
      continue;
    }
    const item = line.match(/^\s*(?:[-*]|\d+[.)])\s+(.*)$/);
    if (item) {
      const ordered = /^\s*\d/.test(line);
      if (!list || list.ordered !== ordered) {
        list = { ordered, node: element(ordered ? "ol" : "ul") };
        root.append(list.node);
      }
      const li = element("li");
      inline(li, item[1], bySource);
      list.node.append(li);
      paragraph = null;
      continue;
    }
    list = null;
    if (!line.trim()) {
      paragraph = null;
      continue;
    }
    if (!paragraph) {
      paragraph = element("p");
      root.append(paragraph);
    } else {
      paragraph.append(document.createTextNode(" "));
    }
    inline(paragraph, line, bySource);
  }
  return root;
}

function inline(parent, text, bySource) {
  const pattern = /(`[^`]+`|\*\*[^*]+\*\*|\[\d+\])/g;
  let position = 0;
  for (const match of text.matchAll(pattern)) {
    parent.append(document.createTextNode(text.slice(position, match.index)));
    const token = match[0];
    if (token.startsWith("`")) parent.append(element("code", {}, token.slice(1, -1)));
    else if (token.startsWith("**")) parent.append(element("strong", {}, token.slice(2, -2)));
    else {
      const citation = bySource.get(Number(token.slice(1, -1)));
      parent.append(citation ? element("a", { class: "marker", href: pdfLink(citation, citation.page), target: "_blank",
        rel: "noopener", title: citation.quotes[0].quote }, token) : document.createTextNode(token));
    }
    position = match.index + token.length;
  }
  parent.append(document.createTextNode(text.slice(position)));
}

function showAnswer(turn, question, prediction) {
  turn.querySelector(".draft").replaceWith(renderMarkdown(prediction.answer, prediction.citations));
  turn.querySelector(".feedback").hidden = false;
  const title = turn.querySelector(".sources-title");
  title.hidden = false;
  const unsupported = prediction.sentences.filter((s) => s.claim && !s.supported);
  if (!prediction.abstained && unsupported.length) {
    const note = element("div", { class: "unsupported" });
    note.append(element("p", { class: "sources-title" }, "Not supported by the sources (check before relying on it):"));
    const items = element("ul");
    for (const sentence of unsupported) items.append(element("li", {}, sentence.text));
    note.append(items);
    title.before(note);
  }
  const passages = new Map(prediction.contexts.map((c) => [c.source, c.text]));
  const listed = prediction.abstained ? prediction.closest_sources : prediction.citations;
  title.textContent = prediction.abstained ? "Closest sources (none answers the question)" : "Sources (each quote supports the answer)";
  for (const citation of listed) {
    const item = element("li", { class: "citation" });
    const page = citation.page || citation.page_start;
    const link = element("a", { href: pdfLink(citation, page), target: "_blank", rel: "noopener", "aria-expanded": "false" },
      `[${citation.source}] ${citation.title} (${citation.file_name}), ${citation.page ? `p. ${page}` : pages(citation)}, ${citation.section}`);
    item.append(link);
    for (const quoted of citation.quotes || []) {
      item.append(element("q", { class: "quote" }, quoted.quote), element("span", { class: "muted" }, ` (p. ${quoted.page})`));
    }
    const passage = element("blockquote", { class: "passage" }, passages.get(citation.source) || "");
    passage.hidden = true;
    // One click opens the PDF at the quoted page (new tab) and shows the whole passage here.
    link.addEventListener("click", () => {
      passage.hidden = false;
      link.setAttribute("aria-expanded", "true");
    });
    item.append(passage);
    turn.querySelector(".citations").append(item);
  }
  for (const verdict of ["up", "down"]) {
    turn.querySelector(`.${verdict}`).addEventListener("click", () => sendFeedback(turn, prediction.trace_id, verdict));
  }
}

// Feedback is an assessment on the answer's MLflow trace.
async function sendFeedback(turn, traceId, verdict) {
  const status = turn.querySelector(".feedback-status");
  const comment = turn.querySelector(".comment").value.trim();
  status.textContent = "Saving…";
  try {
    const response = await fetch("/api/feedback", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ trace_id: traceId, verdict, comment: comment || null }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      status.textContent = body.message || `Feedback not saved: the server answered ${response.status}.`;
      return;
    }
    status.textContent = verdict === "up" ? "Feedback saved: helpful. Thank you." : "Feedback saved: not helpful. Thank you.";
    for (const button of turn.querySelectorAll(".up, .down")) button.disabled = true;
  } catch (err) {
    status.textContent = `Feedback not saved (${err.message}).`;
  }
}

init();
