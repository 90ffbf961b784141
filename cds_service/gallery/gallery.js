// Saves the sign-off entries as a JSON file made in the browser (nothing is sent anywhere).
(function () {
  "use strict";
  function entries() {
    return Array.prototype.map.call(document.querySelectorAll("fieldset.signoff"), function (box) {
      var chosen = box.querySelector("input[type=radio]:checked");
      function value(name) { return box.querySelector("[name=" + name + "]").value.trim(); }
      return {
        kind: box.dataset.kind,
        reviewer: value("reviewer"),
        role: value("role"),
        date: value("date"),
        decision: chosen ? chosen.value : "",
        comments: value("comments")
      };
    });
  }
  document.getElementById("save-signoff").addEventListener("click", function () {
    var content = document.body.dataset;
    var record = {
      knowledgeVersion: content.knowledgeVersion,
      knowledgeHash: content.knowledgeHash,
      savedAt: new Date().toISOString(),
      signoffs: entries()
    };
    var blob = new Blob([JSON.stringify(record, null, 2)], { type: "application/json" });
    var link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "card-signoff-" + record.knowledgeVersion + ".json";
    document.body.appendChild(link);
    link.click();
    link.remove();
    URL.revokeObjectURL(link.href);
  });
})();
