<?php
// HTML of the guestbook entries.

function entry_date($timestamp)
{
    return date('Y-m-d', (int) $timestamp);
}

function render_entry($author, $comment)
{
    echo "<div class=\"entry\">";
    echo "<h2>" . $author . "</h2>";
    echo "<p>" . $comment . "</p>";
    echo "</div>\n";
}
