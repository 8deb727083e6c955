// Refills the debugger's tables from its JSON route every few seconds, without reloading the page.
// The URLs and the interval come from the script tag's data attributes (built by the page's links helper).
const LIVE = document.currentScript.dataset;
function cell(v){
  const t=document.createElement('td');
  if(v&&v.href){const a=document.createElement('a');a.href=v.href;a.textContent=v.text;t.appendChild(a)}
  else t.textContent=(v===null||v===undefined)?'-':String(v);
  return t}
function fill(id, rows, keys){
  const body=document.querySelector('#'+id+' tbody'); if(!body) return;
  body.replaceChildren(...rows.map(r=>{const tr=document.createElement('tr');
    keys.forEach(k=>tr.appendChild(cell(typeof k==='function'?k(r):r[k])));return tr}));
}
async function refresh(){
  try{
    const r=await fetch(LIVE.source,{credentials:'same-origin',headers:{accept:'application/json'}});
    if(!r.ok){document.getElementById('status').textContent='refresh failed: HTTP '+r.status;return}
    const d=await r.json();
    fill('accepted', d.accepted, ['received_at','event_type','event_name',r=>r.in_allowlist?'yes':'no',
      'external_group_id','external_user_id',r=>r.account_id?{href:LIVE.accounts+encodeURIComponent(r.account_id),
      text:r.account_id}:null,'matched_by']);
    fill('rejected', d.rejected, ['rejected_at','status','reason','repeats','body_bytes']);
    document.getElementById('status').textContent='updated '+new Date().toISOString().slice(11,19)+' UTC';
  }catch(err){document.getElementById('status').textContent='refresh failed: '+err}
}
setInterval(refresh, Number(LIVE.refreshMs));
