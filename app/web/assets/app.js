"use strict";
// Placeholder: the real page replaces this file.
document.getElementById("app").textContent = "lanspread";
