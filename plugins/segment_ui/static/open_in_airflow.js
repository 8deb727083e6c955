// Airflow shows the page in a sandboxed iframe that may not navigate the top window; being of the
// same origin, the run link asks Airflow's own router (history + popstate) to open the run instead.
document.getElementById('run-link').addEventListener('click', function (event) {
  try {
    if (window.top === window) return;
    window.top.history.pushState({}, '', this.getAttribute('href'));
    window.top.dispatchEvent(new PopStateEvent('popstate'));
    event.preventDefault();
  } catch (err) { /* another origin: follow the link inside the frame */ }
});
