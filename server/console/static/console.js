// fedwarden console: progressive enhancement only. Every page works without this file.
// Draws the charts whose figures the server put in data-figure attributes, and submits
// forms marked data-fragment with fetch, replacing the named element with the answer.
"use strict";

function drawCharts() {
  if (typeof window.Plotly === "undefined") {
    return;
  }
  for (const element of document.querySelectorAll(".chart[data-figure]")) {
    const figure = JSON.parse(element.dataset.figure);
    window.Plotly.newPlot(element, figure.data, figure.layout, {
      responsive: true,
      displaylogo: false,
    }).then(() => element.setAttribute("data-drawn", "1"));
  }
}

function enhanceForms() {
  for (const form of document.querySelectorAll("form[data-fragment]")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const slot = document.getElementById(form.dataset.fragment);
      const button = form.querySelector("button[type=submit]");
      if (button) button.disabled = true;
      slot.textContent = "working…";
      try {
        const response = await fetch(form.action, {
          method: "POST",
          body: new FormData(form),
          headers: { "X-Console-Fragment": "1" },
          credentials: "same-origin",
        });
        slot.innerHTML = await response.text();
      } catch (error) {
        slot.textContent = "the request failed: " + error;
      } finally {
        if (button) button.disabled = false;
      }
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  drawCharts();
  enhanceForms();
});
