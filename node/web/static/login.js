"use strict";
// Say why the last login did not work, in words.
(function () {
  const params = new URLSearchParams(window.location.search);
  const reasons = {
    wrong: "Wrong password. Try again.",
    wait: "Too many wrong passwords: wait " + (params.get("s") || "a few") + " seconds, then try again.",
    origin: "That login did not come from this page. Log in here.",
    link: "That login link was already used or has expired. Log in with the password.",
  };
  const reason = reasons[params.get("error")];
  if (reason) {
    const box = document.getElementById("login-message");
    box.textContent = reason;
    box.hidden = false;
  }
})();
