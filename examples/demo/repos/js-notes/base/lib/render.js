// HTML pages of the notes board.

function escapeHtml(text) {
  return String(text)
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

function renderNote(res, title, body) {
  res.set("Content-Type", "text/html");
  res.send("<html><head><title>" + title + "</title></head><body><h1>" + title + "</h1><pre>" + escapeHtml(body) + "</pre></body></html>");
}

module.exports = { escapeHtml, renderNote };
