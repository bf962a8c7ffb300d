"use strict";
(() => {
  const q = new URLSearchParams(location.search);
  const next = q.get("next") || "/";
  document.getElementById("next").value = next.startsWith("/") && !next.startsWith("//") ? next : "/";
  if (q.get("failed")) document.getElementById("failed").hidden = false;
})();
