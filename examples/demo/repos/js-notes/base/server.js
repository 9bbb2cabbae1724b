const express = require("express");
const { renderNote } = require("./lib/render");
const { readNote } = require("./lib/files");

const app = express();

app.get("/note/:name", (req, res) => {
  const text = readNote(req.params.name + ".md");
  if (text === null) {
    res.status(404).end();
    return;
  }
  renderNote(res, req.params.name, text);
});

app.get("/raw", (req, res) => {
  const text = readNote(String(req.query.file));
  res.type("text/plain").end(text === null ? "" : text);
});

app.listen(3000, () => console.log("notes on :3000"));
