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

async function getJson(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  return response.json();
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
    $("model").textContent = `Answers from ${state.config.model_uri}${version}.`;
    if (state.config.documents) {
      state.documents = await getJson("/api/documents");
      for (const doc of state.documents) {
        $("document").append(element("option", { value: doc.doc_id }, `${doc.title} (${doc.file_name})`));
      }
      $("filters").hidden = state.documents.length === 0;
    }
  } catch (err) {
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
  try {
    const response = await fetch("/invocations", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ messages, filters: currentFilters() }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      turn.remove(); // keep the question in the box to fix it
      showError(body.message || `The server answered ${response.status}.`);
      return;
    }
    const prediction = body.predictions[0];
    state.messages = [...messages, { role: "assistant", content: prediction.answer }];
    showAnswer(question, prediction);
    $("question").value = "";
  } catch (err) {
    turn.remove();
    showError(`The server could not be reached (${err.message}); your question is still in the box.`);
  } finally {
    setBusy(false);
    $("question").focus();
  }
}

function pages(citation) {
  return citation.page_end !== citation.page_start ? `pp. ${citation.page_start}-${citation.page_end}`
    : `p. ${citation.page_start}`;
}

function showAnswer(question, prediction) {
  const turn = $("answer-template").content.firstElementChild.cloneNode(true);
  turn.querySelector(".text").textContent = prediction.answer;
  if (!prediction.cited_explicitly) {
    turn.querySelector(".sources-title").textContent = "Sources given to the model (it cited none by number)";
  }
  const passages = new Map(prediction.contexts.map((c) => [c.source, c.text]));
  for (const citation of prediction.citations) {
    const item = element("li", { class: "citation" });
    const link = element("a", {
      href: `/documents/${encodeURIComponent(citation.doc_id)}.pdf#page=${citation.page_start}`,
      target: "_blank", rel: "noopener", "aria-expanded": "false",
    }, `[${citation.source}] ${citation.title} (${citation.file_name}), ${pages(citation)}, ${citation.section}`);
    const passage = element("blockquote", { class: "passage" }, passages.get(citation.source) || "");
    passage.hidden = true;
    // One click opens the PDF at the cited page (new tab) and shows the passage here.
    link.addEventListener("click", () => {
      passage.hidden = false;
      link.setAttribute("aria-expanded", "true");
    });
    item.append(link, passage);
    turn.querySelector(".citations").append(item);
  }
  const retrieved = prediction.contexts.map((c) => c.section_id);
  for (const verdict of ["up", "down"]) {
    turn.querySelector(`.${verdict}`).addEventListener("click", () => sendFeedback(turn, question, prediction.answer,
      retrieved, verdict));
  }
  $("conversation").append(turn);
}

async function sendFeedback(turn, question, answer, retrieved, verdict) {
  const status = turn.querySelector(".feedback-status");
  const comment = turn.querySelector(".comment").value.trim();
  status.textContent = "Saving…";
  try {
    const response = await fetch("/api/feedback", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ question, answer, retrieved_ids: retrieved, verdict, comment: comment || null }),
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
