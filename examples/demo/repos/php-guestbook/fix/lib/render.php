<?php
// HTML of the guestbook entries.

function entry_date($timestamp)
{
    return date('Y-m-d', (int) $timestamp);
}

function render_entry($author, $comment)
{
    echo "<div class=\"entry\">";
    echo "<h2>" . htmlspecialchars($author, ENT_QUOTES) . "</h2>";
    echo "<p>" . htmlspecialchars($comment, ENT_QUOTES) . "</p>";
    echo "</div>\n";
}
