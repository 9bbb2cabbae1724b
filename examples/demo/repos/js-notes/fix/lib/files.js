// The notes on disk.
const fs = require("fs");
const path = require("path");

const NOTES_DIR = path.join(__dirname, "..", "notes");

function readNote(name) {
  const file = path.resolve(NOTES_DIR, name);
  if (file.startsWith(NOTES_DIR + path.sep)) {
    return fs.existsSync(file) ? fs.readFileSync(file, "utf8") : null;
  }
  return null;
}

module.exports = { readNote };
