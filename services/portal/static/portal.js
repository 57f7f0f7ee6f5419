// The portal's only script of its own (htmx aside). Every page works without it.
// Print buttons: a link to the print sheet without script; with script, print right here.
document.addEventListener("click", function (event) {
  var button = event.target.closest("[data-print]");
  if (button) {
    event.preventDefault();
    window.print();
  }
});
