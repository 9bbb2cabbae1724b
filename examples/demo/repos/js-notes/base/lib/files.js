// The notes on disk.
const fs = require("fs");
const path = require("path");

const NOTES_DIR = path.join(__dirname, "..", "notes");

function readNote(name) {
  const file = NOTES_DIR + "/" + name;
  if (!fs.existsSync(file)) {
    return null;
  }
  return fs.readFileSync(file, "utf8");
}

module.exports = { readNote };
