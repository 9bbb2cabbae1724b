<?php
// Files attached to guestbook entries, stored under uploads/.

const UPLOAD_DIR = __DIR__ . '/../uploads/';

function attachment_names()
{
    return array_values(array_diff(scandir(UPLOAD_DIR), array('.', '..')));
}

function send_attachment($name)
{
    $path = UPLOAD_DIR . $name;
    header('Content-Length: ' . filesize($path));
    readfile($path);
}
