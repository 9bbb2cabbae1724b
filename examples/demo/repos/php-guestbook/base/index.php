<?php
require __DIR__ . '/lib/render.php';
require __DIR__ . '/lib/attachments.php';

$entries = json_decode(file_get_contents(__DIR__ . '/data/entries.json'), true);

if (isset($_GET['attachment'])) {
    header('Content-Type: application/octet-stream');
    send_attachment($_GET['attachment']);
    exit;
}

echo "<html><body><h1>Guestbook</h1>\n";
foreach ($entries as $entry) {
    render_entry($entry['author'], $entry['comment']);
}
echo "</body></html>\n";
