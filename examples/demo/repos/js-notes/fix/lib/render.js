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
  const safeTitle = escapeHtml(title);
  res.send("<html><head><title>" + safeTitle + "</title></head><body><h1>" + safeTitle + "</h1><pre>" + escapeHtml(body) + "</pre></body></html>");
}

module.exports = { escapeHtml, renderNote };
